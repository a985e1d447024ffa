//! What every Farmhand test suite shares (dev-dependency of each crate, dependency of the
//! testkit): [`eventually`], the one way a test waits — poll a condition until it holds or
//! a deadline passes, never a bare sleep — and [`data_map`], the privacy data map the
//! storage-walking tests check against, and [`postgres::PgCluster`], a throw-away
//! PostgreSQL for the tests of the plane's postgres backend.
//!
//! The deadline is the caller's (or [`PATIENCE`]) times `FARMHAND_TEST_PATIENCE` (a
//! number, default 1): a slow or loaded machine stretches every wait at once instead of
//! every test growing its own margin.

pub mod postgres;

use std::future::Future;
use std::time::Duration;

/// How long [`eventually`] waits by default, before the patience factor.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often a condition is checked again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// `limit` stretched by `FARMHAND_TEST_PATIENCE` (ignored unless a positive number).
pub fn patience(limit: Duration) -> Duration {
    let factor = std::env::var("FARMHAND_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);
    limit.mul_f64(factor)
}

/// What a check answers: `true`/`false`, or `Some(value)` once the value is there.
pub trait Check {
    /// What `eventually` returns when the check holds.
    type Value;
    /// The value, once the condition holds.
    fn done(self) -> Option<Self::Value>;
}

impl Check for bool {
    type Value = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// A condition that did not hold in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// How long, after the patience factor.
    pub after: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting until {}",
            self.after, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// Polls `check` until it holds, for at most `limit` (stretched by the patience factor).
pub async fn within<C, F, Fut>(
    limit: Duration,
    what: &str,
    mut check: F,
) -> Result<C::Value, TimedOut>
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let after = patience(limit);
    let deadline = tokio::time::Instant::now() + after;
    loop {
        if let Some(value) = check().await.done() {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                after,
            });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `check` until it holds; fails the test after [`PATIENCE`] (stretched).
pub async fn eventually<C, F, Fut>(what: &str, check: F) -> C::Value
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    match within(PATIENCE, what, check).await {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

/// One row of `docs/privacy.md`'s data map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMapRow {
    /// The first cell: `tree NAME` or `file NAME`.
    pub location: String,
    /// The second cell: what the record holds (its fields).
    pub what: String,
    /// The last cell as an export part: `` `NAME` `` gives `Some("NAME")`; anything else
    /// (`—` and a reason) `None`.
    pub export: Option<String>,
}

/// The rows of the data map's section headed `heading` (the map is read by the tests that
/// walk each binary's storage, its exports and where data ends up).
pub fn data_map_rows(heading: &str) -> Vec<DataMapRow> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/privacy.md");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or("");
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
        let location = cells.first().map_or("", |c| c.trim().trim_matches('`'));
        if !(location.starts_with("tree ") || location.starts_with("file ")) {
            continue;
        }
        let last = cells.last().map_or("", |c| c.trim());
        rows.push(DataMapRow {
            location: location.to_string(),
            what: cells.get(1).map_or("", |c| c.trim()).to_string(),
            export: last
                .strip_prefix('`')
                .and_then(|p| p.strip_suffix('`'))
                .map(str::to_string),
        });
    }
    rows
}

/// The locations the data map lists in the section headed `heading`, as `tree NAME` /
/// `file NAME`.
pub fn data_map(heading: &str) -> std::collections::BTreeSet<String> {
    data_map_rows(heading)
        .into_iter()
        .map(|r| r.location)
        .collect()
}

/// [`data_map`]'s locations with the export part each lands in.
pub fn data_map_exports(heading: &str) -> std::collections::BTreeMap<String, Option<String>> {
    data_map_rows(heading)
        .into_iter()
        .map(|r| (r.location, r.export))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_condition_that_comes_true_returns_its_value() {
        let mut n = 0;
        let got = eventually("n reaches 3", || {
            n += 1;
            let v = (n >= 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_times_out_naming_it() {
        let e = within(Duration::from_millis(50), "never", || async { false })
            .await
            .unwrap_err();
        assert_eq!(e.what, "never");
        assert!(e.to_string().contains("never"));
    }
}
