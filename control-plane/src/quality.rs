//! What each seller's boxes measurably deliver, per agent, over the last hour, day and
//! week: probe availability and first-byte latency (`probe`), rotation success and time to
//! a new IP (rotation receipts: the plane's own rotations are timed, the agents' own only
//! counted), and how often its allocations had to be moved away. Kept in hourly buckets
//! (a week of them per agent, so memory stays flat), in memory on the node that sees the
//! agent's probes and rotations: after a restart the windows fill again.
//!
//! **The score** (0–100, `docs/operations.md` "What the quality score means"): probe
//! availability × rotation success × a latency factor (1 up to a median first byte of
//! 1 s, falling linearly to 0.5 at 5 s and beyond), × 100, rounded. No probes in the window:
//! no score. Latency percentiles are estimated from a fixed set of buckets (interpolated
//! within the bucket). Windows are whole clock hours: `1h` is this hour and the one before
//! (60 to 120 minutes), `24h` and `7d` likewise end with this hour.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;

/// Upper bounds of the latency buckets, ms (the last one holds everything above).
const LATENCY_MS: [u64; 10] = [25, 50, 100, 200, 400, 800, 1600, 3200, 6400, u64::MAX];
/// Hours kept per agent: the longest window.
const HOURS: i64 = 7 * 24;

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
}

/// One hour of one agent.
#[derive(Debug, Clone, Default)]
struct Bucket {
    hour: i64,
    probes: u64,
    probes_ok: u64,
    /// Successful probes' first byte, by `LATENCY_MS` bucket.
    latency: [u64; LATENCY_MS.len()],
    rotations: u64,
    rotations_changed: u64,
    /// The plane's own rotations: how many were timed, and their total time to a new IP.
    rotations_timed: u64,
    rotation_ms_total: u64,
    replacements: u64,
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

/// Every agent's hourly buckets.
#[derive(Debug, Default)]
pub struct Quality {
    agents: Mutex<HashMap<String, VecDeque<Bucket>>>,
}

impl Quality {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Bucket>>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bucket of `agent_id` for the hour of `at` (older buckets beyond a week go).
    fn with_bucket(&self, agent_id: &str, at: OffsetDateTime, change: impl FnOnce(&mut Bucket)) {
        let hour = at.unix_timestamp().div_euclid(3600);
        let mut agents = self.lock();
        let buckets = agents.entry(agent_id.to_string()).or_default();
        if buckets.back().is_none_or(|b| b.hour < hour) {
            buckets.push_back(Bucket {
                hour,
                ..Bucket::default()
            });
        }
        while buckets.front().is_some_and(|b| b.hour <= hour - HOURS) {
            buckets.pop_front();
        }
        // A late report for an earlier hour lands in that hour if it is still kept.
        if let Some(bucket) = buckets.iter_mut().rev().find(|b| b.hour <= hour) {
            change(bucket);
        }
    }

    /// A probe of one of `agent_id`'s allocations: `first_byte` when it succeeded.
    pub fn probed(&self, agent_id: &str, at: OffsetDateTime, first_byte: Option<Duration>) {
        self.with_bucket(agent_id, at, |b| {
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
        self.with_bucket(agent_id, at, |b| {
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
        self.with_bucket(agent_id, at, |b| b.replacements += 1);
    }

    /// The agents with any figure kept.
    pub fn agents(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// `agent_id`'s figures over `window` ending at `now`.
    pub fn figures(&self, agent_id: &str, window: Window, now: OffsetDateTime) -> Figures {
        self.figures_of(&[agent_id], window, now)
    }

    /// The figures of `agent_ids` together (a seller label's boxes) over `window`.
    pub fn figures_of(&self, agent_ids: &[&str], window: Window, now: OffsetDateTime) -> Figures {
        let from = now.unix_timestamp().div_euclid(3600) - window.hours();
        let agents = self.lock();
        let mut sum = Bucket::default();
        let buckets = agent_ids.iter().filter_map(|id| agents.get(*id)).flatten();
        for b in buckets.filter(|b| b.hour > from) {
            sum.probes += b.probes;
            sum.probes_ok += b.probes_ok;
            for (total, n) in sum.latency.iter_mut().zip(b.latency) {
                *total += n;
            }
            sum.rotations += b.rotations;
            sum.rotations_changed += b.rotations_changed;
            sum.rotations_timed += b.rotations_timed;
            sum.rotation_ms_total += b.rotation_ms_total;
            sum.replacements += b.replacements;
        }
        figures(&sum)
    }
}

/// `part / whole` in percent to one decimal; `None` when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

fn figures(sum: &Bucket) -> Figures {
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
fn percentile(counts: &[u64; LATENCY_MS.len()], q: f64) -> Option<u64> {
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

    fn at(hours: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1000 + hours)
    }

    #[test]
    fn windows_sum_their_hours_and_forget_the_rest() {
        let q = Quality::default();
        let ms = |n| Some(Duration::from_millis(n));
        // A week ago (beyond every window), yesterday, and now.
        q.probed("a", at(-200), None);
        q.probed("a", at(-10), None);
        for _ in 0..9 {
            q.probed("a", at(0), ms(30));
        }
        q.probed("a", at(0), ms(3000));
        let hour = q.figures("a", Window::Hour, at(0));
        assert_eq!((hour.probes, hour.probes_ok), (10, 10));
        // Interpolated within their buckets: 5 of the 9 in (25, 50], the 10th in (1600, 3200].
        assert_eq!((hour.p50_ms, hour.p95_ms), (Some(39), Some(3200)));
        assert_eq!(hour.availability_pct, Some(100.0));
        assert_eq!(hour.score, Some(100));
        let day = q.figures("a", Window::Day, at(0));
        assert_eq!((day.probes, day.availability_pct), (11, Some(90.9)));
        let week = q.figures("a", Window::Week, at(0));
        assert_eq!(week.probes, 11, "the probe 200 h ago is gone");
        assert_eq!(q.figures("b", Window::Week, at(0)), Figures::default());
        q.probed("b", at(0), None);
        let both = q.figures_of(&["a", "b"], Window::Hour, at(0));
        assert_eq!((both.probes, both.probes_ok), (11, 10));
    }

    #[test]
    fn the_score_weighs_availability_rotations_and_latency() {
        let q = Quality::default();
        for i in 0..4 {
            let first_byte = (i > 0).then(|| Duration::from_millis(3000));
            q.probed("a", at(0), first_byte);
        }
        q.rotated("a", at(0), true, Some(Duration::from_secs(4)));
        q.rotated("a", at(0), false, None);
        q.replaced_from("a", at(0));
        let f = q.figures("a", Window::Hour, at(0));
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
