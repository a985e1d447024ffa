//! What the probes found, per allocation: its recent results (the newest `[probe] history`)
//! and the judgement — failures in a row, and whether (and why) it is degraded. Held in
//! memory by the node that probes the allocation (the node holding its agent's session);
//! forgotten when the allocation stops being live.

use super::fetch::Failure;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;

/// One probe of one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// When it started (the plane's clock).
    pub at: OffsetDateTime,
    /// Why it failed (`None`: both protocols answered, in time, from the modem's IP).
    pub failure: Option<Failure>,
    /// Which protocol failed (`http`, `socks5`).
    pub protocol: Option<&'static str>,
    /// TCP connect time of the HTTP fetch (or of the failed one).
    pub connect: Option<Duration>,
    /// First byte of the HTTP fetch's answer (or of the failed one's).
    pub first_byte: Option<Duration>,
    /// The IP the target saw.
    pub egress_ip: Option<String>,
    /// The IP the modem reported when the probe ran (`None`: unknown, e.g. rotating).
    pub modem_ip: Option<String>,
}

/// What a recorded result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to announce.
    Steady,
    /// The failures in a row reached the threshold: degraded, for this reason.
    Degraded(Failure),
    /// Still failing while degraded, another threshold's worth: try moving it again.
    StillDegraded(Failure),
    /// A success after being degraded.
    Recovered,
}

/// One allocation's record.
#[derive(Debug, Clone, Default)]
pub struct Track {
    /// Newest last.
    pub results: VecDeque<ProbeResult>,
    /// Failures in a row.
    pub failures_in_a_row: u32,
    /// Why it is degraded, while it is.
    pub degraded: Option<Failure>,
}

/// Every probed allocation's record (see the module docs).
#[derive(Debug)]
pub struct Book {
    tracks: Mutex<HashMap<String, Track>>,
    history: usize,
    threshold: u32,
}

impl Book {
    /// Keeps `history` results per allocation; `threshold` failures in a row degrade.
    pub fn new(history: usize, threshold: u32) -> Self {
        Book {
            tracks: Mutex::default(),
            history: history.max(1),
            threshold: threshold.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Track>> {
        self.tracks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `result` for `allocation_id` and judges it.
    pub fn record(&self, allocation_id: &str, result: ProbeResult) -> Verdict {
        let mut tracks = self.lock();
        let track = tracks.entry(allocation_id.to_string()).or_default();
        let failure = result.failure;
        if track.results.len() == self.history {
            track.results.pop_front();
        }
        track.results.push_back(result);
        let Some(failure) = failure else {
            track.failures_in_a_row = 0;
            return match track.degraded.take() {
                Some(_) => Verdict::Recovered,
                None => Verdict::Steady,
            };
        };
        track.failures_in_a_row = track.failures_in_a_row.saturating_add(1);
        if track.failures_in_a_row % self.threshold != 0 {
            return Verdict::Steady;
        }
        match track.degraded {
            None => {
                track.degraded = Some(failure);
                Verdict::Degraded(failure)
            }
            Some(_) => Verdict::StillDegraded(failure),
        }
    }

    /// The record of `allocation_id`, if it was probed here.
    pub fn track(&self, allocation_id: &str) -> Option<Track> {
        self.lock().get(allocation_id).cloned()
    }

    /// Forgets every allocation not in `probed`.
    pub fn retain(&self, probed: &HashSet<String>) {
        self.lock().retain(|id, _| probed.contains(id));
    }
}

/// A track's figures: results, successes, and the median and 95th percentile of the
/// successful probes' first byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Results kept.
    pub probes: usize,
    /// Of which succeeded.
    pub ok: usize,
    /// Median first byte of the successes.
    pub p50: Option<Duration>,
    /// 95th percentile first byte of the successes.
    pub p95: Option<Duration>,
}

impl Track {
    /// `degraded`, `ok` (probed and not degraded) or `unknown` (not probed yet).
    pub fn health(&self) -> &'static str {
        match (self.degraded, self.results.is_empty()) {
            (Some(_), _) => "degraded",
            (None, false) => "ok",
            (None, true) => "unknown",
        }
    }

    /// The figures over the kept results.
    pub fn summary(&self) -> Summary {
        let mut times: Vec<Duration> = self
            .results
            .iter()
            .filter(|r| r.failure.is_none())
            .filter_map(|r| r.first_byte)
            .collect();
        times.sort_unstable();
        let ok = self.results.iter().filter(|r| r.failure.is_none()).count();
        // Nearest rank: the smallest value with at least q of the values at or below it.
        let rank = |q: f64| -> Option<Duration> {
            let n = times.len();
            let index = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            times.get(index).copied()
        };
        Summary {
            probes: self.results.len(),
            ok,
            p50: rank(0.5),
            p95: rank(0.95),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(failure: Option<Failure>, ms: u64) -> ProbeResult {
        ProbeResult {
            at: OffsetDateTime::UNIX_EPOCH,
            failure,
            protocol: failure.map(|_| "http"),
            connect: Some(Duration::from_millis(1)),
            first_byte: Some(Duration::from_millis(ms)),
            egress_ip: None,
            modem_ip: None,
        }
    }

    #[test]
    fn failures_in_a_row_degrade_once_and_a_success_recovers() {
        let book = Book::new(5, 3);
        let fail = Some(Failure::Timeout);
        assert_eq!(book.record("a", result(fail, 1)), Verdict::Steady);
        assert_eq!(
            book.record("a", result(None, 1)),
            Verdict::Steady,
            "the run restarts"
        );
        assert_eq!(book.record("a", result(fail, 1)), Verdict::Steady);
        assert_eq!(book.record("a", result(fail, 1)), Verdict::Steady);
        let mismatch = Some(Failure::IpMismatch);
        assert_eq!(
            book.record("a", result(mismatch, 1)),
            Verdict::Degraded(Failure::IpMismatch)
        );
        assert_eq!(
            book.record("a", result(fail, 1)),
            Verdict::Steady,
            "told once"
        );
        assert_eq!(book.record("a", result(fail, 1)), Verdict::Steady);
        assert_eq!(
            book.record("a", result(fail, 1)),
            Verdict::StillDegraded(Failure::Timeout)
        );
        assert_eq!(book.track("a").unwrap().health(), "degraded");
        assert_eq!(book.record("a", result(None, 1)), Verdict::Recovered);
        let track = book.track("a").unwrap();
        assert_eq!(track.results.len(), 5, "bounded history");
        assert_eq!(book.track("a").unwrap().health(), "ok");
        assert_eq!(Track::default().health(), "unknown");
    }

    #[test]
    fn tracks_of_ended_allocations_are_forgotten() {
        let book = Book::new(10, 2);
        book.record("a", result(Some(Failure::Timeout), 1));
        book.record("b", result(None, 1));
        book.retain(&HashSet::from(["b".to_string()]));
        assert!(book.track("a").is_none());
        assert_eq!(book.track("b").unwrap().results.len(), 1);
    }

    #[test]
    fn the_summary_counts_successes_and_ranks_their_latency() {
        let book = Book::new(100, 3);
        for ms in 1..=20 {
            book.record("a", result(None, ms));
        }
        book.record("a", result(Some(Failure::Slow), 9000));
        let s = book.track("a").unwrap().summary();
        assert_eq!((s.probes, s.ok), (21, 20));
        assert_eq!(s.p50, Some(Duration::from_millis(10)));
        assert_eq!(s.p95, Some(Duration::from_millis(19)));
        assert_eq!(Track::default().summary().p50, None);
    }
}
