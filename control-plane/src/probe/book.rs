//! What the probes found, per allocation: its recent results (the newest `[probe] history`)
//! and the judgement — failures in a row, and whether (and why) it is degraded. The store
//! keeps it (`store::probes`: every node answers alike, a restart or a move of the agent to
//! another node continues the judgement). Each probe reads the record, judges and writes
//! it back: no copy is kept here, so a node that probed an allocation before its agent went
//! elsewhere and came back cannot write an older judgement over a newer one.

use super::fetch::Failure;
use crate::store::{AllocationRecord, ProbeRecord, ProbeTrack, Store};
use std::collections::VecDeque;
use std::time::Duration;
use time::OffsetDateTime;
use tracing::warn;

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
    /// The node that ran it.
    pub node: String,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Track {
    /// The agent whose port the results describe.
    pub agent_id: String,
    /// Its modem.
    pub imei: String,
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
    store: Store,
    history: usize,
    threshold: u32,
}

impl Book {
    /// Keeps `history` results per allocation in `store`; `threshold` failures in a row
    /// degrade.
    pub fn new(store: Store, history: usize, threshold: u32) -> Self {
        Book {
            store,
            history: history.max(1),
            threshold: threshold.max(1),
        }
    }

    /// Records `result` of `allocation`'s port, judges it, and stores the record. When the
    /// record cannot be read, nothing is judged or written (`Steady`: a judgement made
    /// afresh would write over the kept one); a failed write is logged, the verdict stands.
    /// The caller runs one probe of an allocation at a time.
    pub async fn record(&self, allocation: &AllocationRecord, result: ProbeResult) -> Verdict {
        let id = &allocation.allocation_id;
        let mut track = match self.store.probe_track(id).await {
            Ok(stored) => stored.map(Track::from_record).unwrap_or_default(),
            Err(e) => {
                warn!(allocation_id = %id, "probes: cannot read the probe record, this probe is not judged: {e}");
                return Verdict::Steady;
            }
        };
        if track.agent_id != allocation.agent_id || track.imei != allocation.imei {
            // Another port now (a move): its results start afresh; a degraded allocation
            // stays so until its new port passes.
            track.agent_id.clone_from(&allocation.agent_id);
            track.imei.clone_from(&allocation.imei);
            track.results.clear();
            track.failures_in_a_row = 0;
        }
        let verdict = self.judge(&mut track, result);
        if let Err(e) = self.store.save_probe_track(id, &track.to_record()).await {
            warn!(allocation_id = %id, "probes: cannot store the probe record: {e}");
        }
        verdict
    }

    fn judge(&self, track: &mut Track, result: ProbeResult) -> Verdict {
        let failure = result.failure;
        while track.results.len() >= self.history {
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
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Track {
    /// The record as the store keeps it.
    pub fn to_record(&self) -> ProbeTrack {
        ProbeTrack {
            agent_id: self.agent_id.clone(),
            imei: self.imei.clone(),
            failures_in_a_row: self.failures_in_a_row,
            degraded: self.degraded.map(|f| f.as_str().to_string()),
            results: self
                .results
                .iter()
                .map(|r| ProbeRecord {
                    at: r.at,
                    failure: r.failure.map(|f| f.as_str().to_string()),
                    protocol: r.protocol.map(str::to_string),
                    connect_ms: r.connect.map(ms),
                    first_byte_ms: r.first_byte.map(ms),
                    egress_ip: r.egress_ip.clone(),
                    modem_ip: r.modem_ip.clone(),
                    node: r.node.clone(),
                })
                .collect(),
        }
    }

    /// A stored record (a reason this build does not know reads as `bad_reply`).
    pub fn from_record(stored: ProbeTrack) -> Self {
        let failure = |name: &str| Failure::named(name).unwrap_or(Failure::BadReply);
        Track {
            degraded: stored.degraded.as_deref().map(failure),
            results: stored
                .results
                .into_iter()
                .map(|r| ProbeResult {
                    at: r.at,
                    failure: r.failure.as_deref().map(failure),
                    protocol: match r.protocol.as_deref() {
                        Some("http") => Some("http"),
                        Some("socks5") => Some("socks5"),
                        _ => None,
                    },
                    connect: r.connect_ms.map(Duration::from_millis),
                    first_byte: r.first_byte_ms.map(Duration::from_millis),
                    egress_ip: r.egress_ip,
                    modem_ip: r.modem_ip,
                    node: r.node,
                })
                .collect(),
            agent_id: stored.agent_id,
            imei: stored.imei,
            failures_in_a_row: stored.failures_in_a_row,
        }
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
    use crate::store::SledStore;

    fn result(failure: Option<Failure>, ms: u64) -> ProbeResult {
        ProbeResult {
            at: OffsetDateTime::UNIX_EPOCH,
            failure,
            protocol: failure.map(|_| "http"),
            connect: Some(Duration::from_millis(1)),
            first_byte: Some(Duration::from_millis(ms)),
            egress_ip: Some("203.0.113.9".into()),
            modem_ip: Some("203.0.113.9".into()),
            node: "nd_1".into(),
        }
    }

    fn live(id: &str, imei: &str) -> AllocationRecord {
        AllocationRecord {
            imei: imei.into(),
            ..AllocationRecord::example(id, OffsetDateTime::UNIX_EPOCH)
        }
    }

    /// A book over a fresh sled store holding allocation `a` (on modem `m1`).
    fn book(history: usize, threshold: u32) -> (tempfile::TempDir, Store, Book, AllocationRecord) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Sled(SledStore::open(dir.path()).unwrap());
        let a = live("a", "m1");
        store.as_sled().unwrap().insert_allocation(&a).unwrap();
        let book = Book::new(store.clone(), history, threshold);
        (dir, store, book, a)
    }

    #[tokio::test]
    async fn failures_in_a_row_degrade_once_and_a_success_recovers() {
        let (_dir, store, book, a) = book(5, 3);
        let fail = Some(Failure::Timeout);
        assert_eq!(book.record(&a, result(fail, 1)).await, Verdict::Steady);
        assert_eq!(
            book.record(&a, result(None, 1)).await,
            Verdict::Steady,
            "the run restarts"
        );
        assert_eq!(book.record(&a, result(fail, 1)).await, Verdict::Steady);
        assert_eq!(book.record(&a, result(fail, 1)).await, Verdict::Steady);
        let mismatch = Some(Failure::IpMismatch);
        assert_eq!(
            book.record(&a, result(mismatch, 1)).await,
            Verdict::Degraded(Failure::IpMismatch)
        );
        assert_eq!(
            book.record(&a, result(fail, 1)).await,
            Verdict::Steady,
            "told once"
        );
        assert_eq!(book.record(&a, result(fail, 1)).await, Verdict::Steady);
        assert_eq!(
            book.record(&a, result(fail, 1)).await,
            Verdict::StillDegraded(Failure::Timeout)
        );
        let stored = Track::from_record(store.probe_track("a").await.unwrap().unwrap());
        assert_eq!(stored.health(), "degraded");
        assert_eq!(stored.degraded, Some(Failure::IpMismatch));
        assert_eq!(book.record(&a, result(None, 1)).await, Verdict::Recovered);
        let stored = Track::from_record(store.probe_track("a").await.unwrap().unwrap());
        assert_eq!(stored.results.len(), 5, "bounded history");
        assert_eq!(stored.health(), "ok");
        assert_eq!(Track::default().health(), "unknown");
    }

    #[tokio::test]
    async fn the_judgement_outlives_the_node_and_restarts_on_a_new_port() {
        let (_dir, store, book, a) = book(10, 2);
        let fail = Some(Failure::ProxyError);
        book.record(&a, result(fail, 1)).await;
        assert_eq!(
            book.record(&a, result(fail, 1)).await,
            Verdict::Degraded(Failure::ProxyError)
        );
        // Another node (or this one after a restart) takes over from the store.
        let other = Book::new(store.clone(), 10, 2);
        let stored = store.probe_track("a").await.unwrap().unwrap();
        assert_eq!(
            Track::from_record(stored.clone()).to_record(),
            stored,
            "round trip"
        );
        assert_eq!(other.record(&a, result(None, 1)).await, Verdict::Recovered);
        // A move to another modem: that port's results start afresh, still degraded
        // until it passes.
        assert_eq!(other.record(&a, result(fail, 1)).await, Verdict::Steady);
        assert_eq!(
            other.record(&a, result(fail, 1)).await,
            Verdict::Degraded(Failure::ProxyError)
        );
        let moved = live("a", "m2");
        assert_eq!(other.record(&moved, result(fail, 1)).await, Verdict::Steady);
        let stored = store.probe_track("a").await.unwrap().unwrap();
        assert_eq!((stored.imei.as_str(), stored.results.len()), ("m2", 1));
        assert_eq!(stored.degraded.as_deref(), Some("proxy_error"));
        assert_eq!(
            other.record(&moved, result(None, 1)).await,
            Verdict::Recovered
        );
    }

    #[tokio::test]
    async fn a_node_judges_from_the_kept_record_and_an_ended_allocation_gets_none() {
        let (_dir, store, here, a) = book(10, 2);
        let elsewhere = Book::new(store.clone(), 10, 2);
        let fail = Some(Failure::Timeout);
        // The agent's session moves between nodes: each judges what the other wrote.
        assert_eq!(here.record(&a, result(fail, 1)).await, Verdict::Steady);
        assert_eq!(
            elsewhere.record(&a, result(fail, 1)).await,
            Verdict::Degraded(Failure::Timeout)
        );
        assert_eq!(here.record(&a, result(None, 1)).await, Verdict::Recovered);
        assert_eq!(
            elsewhere.record(&a, result(None, 1)).await,
            Verdict::Steady,
            "recovered once"
        );
        let gone = live("gone", "m1");
        here.record(&gone, result(None, 1)).await;
        assert_eq!(store.probe_track("gone").await.unwrap(), None);
    }

    #[test]
    fn the_summary_counts_successes_and_ranks_their_latency() {
        let mut track = Track::default();
        for ms in 1..=20 {
            track.results.push_back(result(None, ms));
        }
        track.results.push_back(result(Some(Failure::Slow), 9000));
        let s = track.summary();
        assert_eq!((s.probes, s.ok), (21, 20));
        assert_eq!(s.p50, Some(Duration::from_millis(10)));
        assert_eq!(s.p95, Some(Duration::from_millis(19)));
        assert_eq!(Track::default().summary().p50, None);
    }
}
