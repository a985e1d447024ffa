//! What each seller's boxes measurably deliver, per agent, over the last hour, day and
//! week: probe availability and first-byte latency (`probe`), rotation success and time to
//! a new IP (rotation receipts: the plane's own rotations are timed, the agents' own only
//! counted), and how often its allocations had to be moved away. Counted in hourly
//! buckets kept by the store (`store::probes`, a week per agent): each node adds what it
//! saw every few seconds ([`Quality::run`]), so every node reads the same figures and a
//! restart forgets at most those seconds. Reads add this node's counts not yet written.
//!
//! **The score** (0–100, `docs/operations.md` "What the quality score means"): probe
//! availability × rotation success × a latency factor (1 up to a median first byte of
//! 1 s, falling linearly to 0.5 at 5 s and beyond), × 100, rounded. No probes in the window:
//! no score. Latency percentiles are estimated from a fixed set of buckets (interpolated
//! within the bucket). Windows are whole clock hours: `1h` is this hour and the one before
//! (60 to 120 minutes), `24h` and `7d` likewise end with this hour.

use crate::clock::Clock;
use crate::store::{AgentHour, QualityHour, Store, StoreError, LATENCY_BUCKETS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Upper bounds of the latency buckets, ms (the last one holds everything above).
const LATENCY_MS: [u64; LATENCY_BUCKETS] = [25, 50, 100, 200, 400, 800, 1600, 3200, 6400, u64::MAX];
/// Hours kept per agent: the longest window.
const HOURS: i64 = 7 * 24;
/// How often a node adds its counts to the store.
const SYNC: Duration = Duration::from_secs(5);
/// How long the day's sums read for `prefer = "quality"` are reused.
const SCORES_FOR: Duration = Duration::from_secs(5);

/// A window the figures are summed over.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum Window {
    /// The last hour (this clock hour and the one before).
    #[serde(rename = "1h")]
    Hour,
    /// The last 24 hours.
    #[serde(rename = "24h")]
    Day,
    /// The last 7 days.
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    fn hours(self) -> i64 {
        match self {
            // This clock hour alone would be nearly empty just after the hour.
            Window::Hour => 2,
            Window::Day => 24,
            Window::Week => HOURS,
        }
    }

    /// The first hour of the window ending at `now`.
    fn first_hour(self, now: OffsetDateTime) -> i64 {
        hour_of(now) - self.hours() + 1
    }
}

fn hour_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(3600)
}

/// An agent's figures over one window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// Probes run.
    pub probes: u64,
    /// Of which succeeded.
    pub probes_ok: u64,
    /// `probes_ok / probes`, percent (`null` without probes).
    pub availability_pct: Option<f64>,
    /// Median first byte of the successful probes, ms (a bucket's upper bound).
    pub p50_ms: Option<u64>,
    /// 95th percentile, likewise.
    pub p95_ms: Option<u64>,
    /// IP rotations finished (the plane's and the agent's own).
    pub rotations: u64,
    /// Of which brought a new IP, percent (`null` without rotations).
    pub rotation_success_pct: Option<f64>,
    /// Mean time from the plane's rotation request to the new IP, ms (`null` when none
    /// was timed).
    pub time_to_new_ip_ms: Option<u64>,
    /// Allocations moved away from its modems (outage, probes, request).
    pub replacements: u64,
    /// 0–100 (see the module docs); `null` without probes.
    pub score: Option<u32>,
}

impl Figures {
    /// The figures of counts summed over a window.
    pub fn of(sum: &QualityHour) -> Figures {
        figures(sum)
    }
}

/// The day's sums as last read for `prefer = "quality"`.
type DaySums = (Instant, HashMap<String, QualityHour>);

/// Counts by (agent, hour).
type Counts = HashMap<(String, i64), QualityHour>;

/// Every agent's quality (see the module docs).
#[derive(Debug)]
pub struct Quality {
    store: Store,
    /// Counts this node saw and has not yet added to the store, and those being added now
    /// (read with the rest until the write commits).
    unsaved: Mutex<(Counts, Counts)>,
    /// Writes committed so far: the day's sums are kept only if none came while they were
    /// read.
    saves: AtomicU64,
    /// The last day's sums per agent as last read, for `prefer = "quality"`.
    day: Mutex<Option<DaySums>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Each agent's counts summed over `rows`.
fn fold<'a>(
    rows: impl IntoIterator<Item = (&'a String, &'a QualityHour)>,
) -> HashMap<String, QualityHour> {
    let mut sums: HashMap<String, QualityHour> = HashMap::new();
    for (agent, counts) in rows {
        sums.entry(agent.clone()).or_default().add(counts);
    }
    sums
}

impl Quality {
    /// Quality figures kept in `store`.
    pub fn new(store: Store) -> Self {
        Quality {
            store,
            unsaved: Mutex::default(),
            saves: AtomicU64::new(0),
            day: Mutex::default(),
        }
    }

    fn count(&self, agent_id: &str, at: OffsetDateTime, change: impl FnOnce(&mut QualityHour)) {
        let key = (agent_id.to_string(), hour_of(at));
        change(lock(&self.unsaved).0.entry(key).or_default());
    }

    /// A probe of one of `agent_id`'s allocations: `first_byte` when it succeeded.
    pub fn probed(&self, agent_id: &str, at: OffsetDateTime, first_byte: Option<Duration>) {
        self.count(agent_id, at, |b| {
            b.probes += 1;
            if let Some(first_byte) = first_byte {
                b.probes_ok += 1;
                let ms = u64::try_from(first_byte.as_millis()).unwrap_or(u64::MAX);
                let slot = LATENCY_MS
                    .iter()
                    .position(|bound| ms <= *bound)
                    .unwrap_or(0);
                b.latency[slot] += 1;
            }
        });
    }

    /// A rotation of one of `agent_id`'s modems finished; `took` when the plane timed it.
    pub fn rotated(
        &self,
        agent_id: &str,
        at: OffsetDateTime,
        changed: bool,
        took: Option<Duration>,
    ) {
        self.count(agent_id, at, |b| {
            b.rotations += 1;
            b.rotations_changed += u64::from(changed);
            if let (Some(took), true) = (took, changed) {
                b.rotations_timed += 1;
                b.rotation_ms_total += u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
            }
        });
    }

    /// An allocation was moved away from one of `agent_id`'s modems.
    pub fn replaced_from(&self, agent_id: &str, at: OffsetDateTime) {
        self.count(agent_id, at, |b| b.replacements += 1);
    }

    /// Adds this node's counts not yet committed from `from_hour` on (of `agents`, or all)
    /// to `sums`.
    fn add_unsaved(
        &self,
        sums: &mut HashMap<String, QualityHour>,
        agents: Option<&[String]>,
        from_hour: i64,
    ) {
        let wanted = |agent: &String| agents.is_none_or(|ids| ids.contains(agent));
        let unsaved = lock(&self.unsaved);
        for ((agent, hour), counts) in unsaved.0.iter().chain(unsaved.1.iter()) {
            if *hour >= from_hour && wanted(agent) {
                sums.entry(agent.clone()).or_default().add(counts);
            }
        }
    }

    /// Each agent's counts summed from `from_hour` on (`agents`, or all): what the store
    /// keeps plus what this node has not committed yet.
    async fn sums(
        &self,
        agents: Option<&[String]>,
        from_hour: i64,
    ) -> Result<HashMap<String, QualityHour>, StoreError> {
        let stored = self.store.quality_hours(agents, from_hour).await?;
        let mut sums = fold(stored.iter().map(|(agent, _, counts)| (agent, counts)));
        self.add_unsaved(&mut sums, agents, from_hour);
        Ok(sums)
    }

    /// `agent_id`'s figures over every window ending at `now` (one read of its week).
    pub async fn windows(
        &self,
        agent_id: &str,
        now: OffsetDateTime,
    ) -> Result<[Figures; 3], StoreError> {
        let ids = [agent_id.to_string()];
        let week = Window::Week.first_hour(now);
        let mut hours = self.store.quality_hours(Some(&ids), week).await?;
        {
            let unsaved = lock(&self.unsaved);
            for ((agent, hour), counts) in unsaved.0.iter().chain(unsaved.1.iter()) {
                if agent == agent_id && *hour >= week {
                    hours.push((agent.clone(), *hour, counts.clone()));
                }
            }
        }
        Ok(Window::ALL.map(|window| {
            let from = window.first_hour(now);
            let within = hours.iter().filter(|(_, hour, _)| *hour >= from);
            figures(
                &fold(within.map(|(agent, _, counts)| (agent, counts)))
                    .remove(agent_id)
                    .unwrap_or_default(),
            )
        }))
    }

    /// `agent_id`'s figures over `window` ending at `now`.
    pub async fn figures(
        &self,
        agent_id: &str,
        window: Window,
        now: OffsetDateTime,
    ) -> Result<Figures, StoreError> {
        let ids = [agent_id.to_string()];
        let sums = self.sums(Some(&ids), window.first_hour(now)).await?;
        Ok(figures(&sums.get(agent_id).cloned().unwrap_or_default()))
    }

    /// Every agent's counts over `window` ending at `now` (agents without any are absent).
    pub async fn every_agent(
        &self,
        window: Window,
        now: OffsetDateTime,
    ) -> Result<HashMap<String, QualityHour>, StoreError> {
        self.sums(None, window.first_hour(now)).await
    }

    /// Each agent's score over the last day, for `prefer = "quality"`: the store's sums are
    /// read again when older than a few seconds, or when this node has written since.
    pub async fn day_scores(
        &self,
        now: OffsetDateTime,
    ) -> Result<HashMap<String, u32>, StoreError> {
        let from = Window::Day.first_hour(now);
        let kept = lock(&self.day)
            .as_ref()
            .filter(|(read, _)| read.elapsed() < SCORES_FOR)
            .map(|(_, sums)| sums.clone());
        let mut sums = match kept {
            Some(sums) => sums,
            None => {
                let saves = self.saves.load(Ordering::Acquire);
                let stored = self.store.quality_hours(None, from).await?;
                let sums = fold(stored.iter().map(|(agent, _, counts)| (agent, counts)));
                // Kept only if no write committed meanwhile (the read may predate it).
                if self.saves.load(Ordering::Acquire) == saves {
                    *lock(&self.day) = Some((Instant::now(), sums.clone()));
                }
                sums
            }
        };
        self.add_unsaved(&mut sums, None, from);
        Ok(sums
            .into_iter()
            .filter_map(|(agent, sum)| figures(&sum).score.map(|s| (agent, s)))
            .collect())
    }

    /// Adds this node's uncommitted counts to the store; what a failed write held is kept
    /// for the next try. Readers count them meanwhile.
    pub async fn save(&self) -> Result<(), StoreError> {
        let saving: Vec<AgentHour> = {
            let mut unsaved = lock(&self.unsaved);
            let (fresh, saving) = &mut *unsaved;
            for (key, counts) in fresh.drain() {
                saving.entry(key).or_default().add(&counts);
            }
            saving
                .iter()
                .map(|((agent, hour), counts)| (agent.clone(), *hour, counts.clone()))
                .collect()
        };
        if saving.is_empty() {
            return Ok(());
        }
        let written = self.store.add_quality(&saving).await;
        if written.is_ok() {
            let mut unsaved = lock(&self.unsaved);
            unsaved.1.clear();
            self.saves.fetch_add(1, Ordering::AcqRel);
            *lock(&self.day) = None;
        }
        written.map(|_| ())
    }

    /// Writes the counts every few seconds and prunes hours older than a week every hour,
    /// until `shutdown` (the server writes the last ones after every task that counts has
    /// stopped: [`Quality::save`]).
    pub async fn run(self: Arc<Self>, clock: Clock, shutdown: CancellationToken) {
        let mut pruned_hour = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SYNC) => {}
            };
            if let Err(e) = self.save().await {
                warn!("quality: cannot write the counts (kept for the next try): {e}");
            }
            let hour = hour_of(clock.now());
            if pruned_hour != Some(hour) {
                match self.store.prune_quality(hour - HOURS + 1).await {
                    Ok(_) => pruned_hour = Some(hour),
                    Err(e) => warn!("quality: cannot prune old hours: {e}"),
                }
            }
        }
    }
}

/// `part / whole` in percent to one decimal; `None` when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

fn figures(sum: &QualityHour) -> Figures {
    let availability_pct = percent(sum.probes_ok, sum.probes);
    let rotation_success_pct = percent(sum.rotations_changed, sum.rotations);
    let p50_ms = percentile(&sum.latency, 0.5);
    let score = availability_pct.map(|availability| {
        let rotation = rotation_success_pct.unwrap_or(100.0) / 100.0;
        let latency = latency_factor(p50_ms.unwrap_or(0));
        (availability * rotation * latency).round() as u32
    });
    Figures {
        probes: sum.probes,
        probes_ok: sum.probes_ok,
        availability_pct,
        p50_ms,
        p95_ms: percentile(&sum.latency, 0.95),
        rotations: sum.rotations,
        rotation_success_pct,
        time_to_new_ip_ms: (sum.rotations_timed > 0)
            .then(|| sum.rotation_ms_total / sum.rotations_timed),
        replacements: sum.replacements,
        score,
    }
}

/// 1 up to 1 s, falling linearly to 0.5 at 5 s, 0.5 beyond.
fn latency_factor(p50_ms: u64) -> f64 {
    let over = p50_ms.saturating_sub(1000).min(4000) as f64;
    1.0 - over / 8000.0
}

/// The `q` quantile, interpolated within the bucket that holds it (the last bucket, which
/// has no upper bound, is taken to end at twice its lower one).
fn percentile(counts: &[u64; LATENCY_BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        if seen + n >= rank {
            let lower = if i == 0 { 0 } else { LATENCY_MS[i - 1] };
            let upper = match LATENCY_MS[i] {
                u64::MAX => lower * 2,
                bound => bound,
            };
            let within = (rank - seen) as f64 / *n as f64;
            return Some(lower + ((upper - lower) as f64 * within).round() as u64);
        }
        seen += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AgentRecord, SledStore};

    fn at(hours: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1000 + hours)
    }

    /// A sled store with agents `a` and `b` enrolled.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        for id in ["a", "b"] {
            sled.put_agent(&AgentRecord {
                agent_id: id.into(),
                public_key: vec![1; 32],
                label: String::new(),
                hostname: "box".into(),
                enrolled_at: at(0),
                revoked: false,
                approved: true,
            })
            .unwrap();
        }
        (dir, Store::Sled(sled))
    }

    #[tokio::test]
    async fn windows_sum_their_hours_whether_written_or_not() {
        let (_dir, store) = store();
        let q = Quality::new(store.clone());
        let ms = |n| Some(Duration::from_millis(n));
        // A week ago (beyond every window), yesterday, and now.
        q.probed("a", at(-200), None);
        q.probed("a", at(-10), None);
        for _ in 0..9 {
            q.probed("a", at(0), ms(30));
        }
        q.save().await.unwrap();
        q.probed("a", at(0), ms(3000));
        let hour = q.figures("a", Window::Hour, at(0)).await.unwrap();
        assert_eq!((hour.probes, hour.probes_ok), (10, 10));
        // Interpolated within their buckets: 5 of the 9 in (25, 50], the 10th in (1600, 3200].
        assert_eq!((hour.p50_ms, hour.p95_ms), (Some(39), Some(3200)));
        assert_eq!(hour.availability_pct, Some(100.0));
        assert_eq!(hour.score, Some(100));
        let day = q.figures("a", Window::Day, at(0)).await.unwrap();
        assert_eq!((day.probes, day.availability_pct), (11, Some(90.9)));
        let week = q.figures("a", Window::Week, at(0)).await.unwrap();
        assert_eq!(week.probes, 11, "the probe 200 h ago is outside");
        let windows = q.windows("a", at(0)).await.unwrap();
        assert_eq!(windows, [hour.clone(), day.clone(), week.clone()]);
        let none = q.figures("b", Window::Week, at(0)).await.unwrap();
        assert_eq!(none, Figures::default());

        // Another node (or this one restarted) reads what was written.
        q.save().await.unwrap();
        let other = Quality::new(store.clone());
        assert_eq!(other.figures("a", Window::Day, at(0)).await.unwrap(), day);
        other.probed("b", at(0), None);
        let all = other.every_agent(Window::Hour, at(0)).await.unwrap();
        assert_eq!((all["a"].probes, all["b"].probes), (10, 1));
        let scores = other.day_scores(at(0)).await.unwrap();
        assert_eq!((scores.get("a"), scores.get("b")), (Some(&91), Some(&0)));

        // A week on, the old hours are pruned; an unknown agent's counts are not kept.
        assert_eq!(store.prune_quality(hour_of(at(-100))).await.unwrap(), 1);
        other.probed("ag_gone", at(0), None);
        other.save().await.unwrap();
        let kept = store.quality_hours(None, i64::MIN).await.unwrap();
        assert!(
            kept.iter().all(|(agent, _, _)| agent != "ag_gone"),
            "{kept:?}"
        );
    }

    #[tokio::test]
    async fn the_score_weighs_availability_rotations_and_latency() {
        let (_dir, store) = store();
        let q = Quality::new(store);
        for i in 0..4 {
            let first_byte = (i > 0).then(|| Duration::from_millis(3000));
            q.probed("a", at(0), first_byte);
        }
        q.rotated("a", at(0), true, Some(Duration::from_secs(4)));
        q.rotated("a", at(0), false, None);
        q.replaced_from("a", at(0));
        let f = q.figures("a", Window::Hour, at(0)).await.unwrap();
        // 75 % available, half the rotations worked, p50 (2 of 3 in (1600, 3200]) 2667 ms
        // → latency factor 1 - 1667/8000.
        assert_eq!(f.availability_pct, Some(75.0));
        assert_eq!(f.rotation_success_pct, Some(50.0));
        assert_eq!(f.p50_ms, Some(2667));
        assert_eq!(f.time_to_new_ip_ms, Some(4000));
        assert_eq!(f.replacements, 1);
        let latency = 1.0 - 1667.0 / 8000.0;
        assert_eq!(f.score, Some((75.0_f64 * 0.5 * latency).round() as u32));
        assert_eq!(latency_factor(0), 1.0);
        assert_eq!(latency_factor(9000), 0.5);
    }
}
