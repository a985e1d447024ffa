//! What every Farmhand test suite shares (dev-dependency of each crate, dependency of the
//! testkit): [`eventually`], the one way a test waits — poll a condition until it holds or
//! a deadline passes, never a bare sleep — and [`data_map`], the privacy data map the
//! storage-walking tests check against.
//!
//! The deadline is the caller's (or [`PATIENCE`]) times `FARMHAND_TEST_PATIENCE` (a
//! number, default 1): a slow or loaded machine stretches every wait at once instead of
//! every test growing its own margin.

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

/// The locations `docs/privacy.md`'s data map lists in the section headed `heading`: each
/// table row's first cell, `` `tree NAME` `` or `` `file NAME` ``, as `tree NAME` /
/// `file NAME`. The map is read by the tests that walk each binary's storage.
pub fn data_map(heading: &str) -> std::collections::BTreeSet<String> {
    data_map_exports(heading).into_keys().collect()
}

/// [`data_map`]'s locations with the last cell of their row, the export part the record
/// kind lands in: `` `NAME` `` gives `Some("NAME")`; anything else (`—` and a reason) `None`.
pub fn data_map_exports(heading: &str) -> std::collections::BTreeMap<String, Option<String>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/privacy.md");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or("");
    let mut rows = std::collections::BTreeMap::new();
    for line in section.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some(location) = rest.split('`').next() else {
            continue;
        };
        if !(location.starts_with("tree ") || location.starts_with("file ")) {
            continue;
        }
        let last = line
            .trim_end()
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or("");
        let part = last
            .trim()
            .strip_prefix('`')
            .and_then(|p| p.strip_suffix('`'))
            .map(str::to_string);
        rows.insert(location.to_string(), part);
    }
    rows
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
