//! Verified delivery: ONE task per node that proves every sold port works as sold
//! (`[probe]`, `docs/operations.md` "Probes"). Each live allocation whose agent's session
//! this node holds (so, in a cluster, each is probed by exactly one node) is fetched
//! every `interval_s` (jittered) THROUGH the buyer's endpoint with the buyer's
//! credentials — HTTP, then SOCKS5 — from the plane to the echo target (`fetch`), which
//! answers the IP it saw. A probe fails when a fetch fails, its first byte is slow, or the
//! IP seen is not the one the modem reports (`ip_mismatch`).
//!
//! A probe is not judged while its modem rotates (unknown IP before, or another one after),
//! and a port whose traffic quota is used up is not probed. At most one probe of an
//! allocation runs at a time.
//!
//! Judging (`book`): `failures_to_degrade` failures in a row mark the allocation degraded
//! — audited, `allocation.degraded` with the reason, and when automatic replacement is on
//! the allocation moves to another modem with the same credentials (`Allocator::
//! replace_degraded`), tried again after each further run of failures; the next success
//! sends `allocation.recovered`. A port cannot be blamed for the plane's own path: after
//! any failed probe, and at every refresh, the plane fetches the target directly; when that
//! fails the probe does not count and judging pauses (no probe runs,
//! `farmhand_probe_judging_paused` is 1) until it works again.
//!
//! A box whose seller's policy refuses probes (`[policy] probes = false` on the agent) is
//! skipped. A SIM swap under a sold modem (`Fleet::request_probe`) makes its allocations due at
//! once. Starts are paced to at most `max_per_second` and at most `concurrency` run at once.
//! Results and judgements are kept in the store (`book`), so any node answers for them and
//! a restart or a move of the agent to another node carries on where it was.

mod book;
pub mod echo;
pub mod fetch;

pub use book::{Book, ProbeResult, Track};

use book::Verdict;
pub use fetch::Failure;

use crate::allocator::Allocator;
use crate::clock::Clock;
use crate::config::{ProbeConfig, ProbeTarget, ServerConfig};
use crate::events::{EventType, Events};
use crate::fleet::Fleet;
use crate::gateway::Gateway;
use crate::metrics::PlaneMetrics;
use crate::store::{AllocationRecord, AuditAction, Store};
use farmhand_protocol::Secret;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The longest the allocation list is reused before it is read again.
const MAX_REFRESH: Duration = Duration::from_secs(10);

/// The prober (see the module docs).
#[derive(Debug)]
pub struct Prober {
    config: ProbeConfig,
    /// What probes fetch; `None` when probes are off.
    target: Option<Arc<ProbeTarget>>,
    replacement: bool,
    store: Store,
    fleet: Arc<Fleet>,
    gateway: Gateway,
    allocator: Arc<Allocator>,
    events: Events,
    metrics: Arc<PlaneMetrics>,
    book: Book,
    clock: Clock,
    /// Allocations with a probe running (never two at once).
    running: std::sync::Mutex<HashSet<String>>,
}

/// One allocation due for a probe, as last read.
#[derive(Debug, Clone)]
struct Due {
    at: Instant,
    record: Arc<AllocationRecord>,
}

impl Prober {
    /// The prober of `config`'s `[probe]`, fetching `target` (idle without one).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &ServerConfig,
        target: Option<ProbeTarget>,
        store: Store,
        fleet: Arc<Fleet>,
        gateway: Gateway,
        allocator: Arc<Allocator>,
        events: Events,
        metrics: Arc<PlaneMetrics>,
    ) -> Self {
        let clock = fleet.clock().clone();
        Prober {
            book: Book::new(
                store.clone(),
                config.probe.history,
                config.probe.failures_to_degrade,
            ),
            config: config.probe.clone(),
            target: target.map(Arc::new),
            replacement: config.replacement_grace().is_some(),
            store,
            fleet,
            gateway,
            allocator,
            events,
            metrics,
            clock,
            running: std::sync::Mutex::default(),
        }
    }

    /// Whether probes run.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Probes until `shutdown`; returns at once when probes are off.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(target) = self.target.clone() else {
            return;
        };
        info!(target = %target.authority(), interval_s = self.config.interval_s, "probing sold ports");
        let refresh_every = self.config.interval().min(MAX_REFRESH);
        let pace = Duration::from_secs(1) / self.config.max_per_second;
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let tasks = TaskTracker::new();
        let mut due: HashMap<String, Due> = HashMap::new();
        let mut refresh_at = Instant::now();
        while !shutdown.is_cancelled() {
            if Instant::now() >= refresh_at {
                refresh_at = Instant::now() + refresh_every;
                self.refresh(&mut due).await;
                self.check_own_path(&target).await;
            }
            let next = due
                .iter()
                .min_by_key(|(_, d)| d.at)
                .map(|(id, d)| (id.clone(), d.at));
            let wake = match next {
                Some((_, at)) if !self.metrics.probe_judging_paused() => at.min(refresh_at),
                _ => refresh_at,
            };
            if wake > Instant::now() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(wake) => continue,
                    () = self.fleet.probe_wanted().notified() => {
                        self.probe_now(&mut due).await;
                        continue;
                    }
                }
            }
            let Some((id, _)) = next else { continue };
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let Some(entry) = due.get_mut(&id) else {
                continue;
            };
            entry.at = Instant::now() + jittered(self.config.interval());
            if !self.start(&id) {
                // The last probe still runs (a slow port): this one is skipped.
                continue;
            }
            let (this, record, target) = (self.clone(), entry.record.clone(), target.clone());
            tasks.spawn(async move {
                this.probe(&record, &target).await;
                this.finished(&record.allocation_id);
                drop(permit);
            });
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pace) => {}
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `id` for one probe; false while one runs.
    fn start(&self, id: &str) -> bool {
        self.running().insert(id.to_string())
    }

    fn finished(&self, id: &str) {
        self.running().remove(id);
    }

    /// Reads the live allocations this node probes: new ones are first probed within one
    /// interval (spread, so a restart does not probe everything at once), ended or moved
    /// away ones are no longer probed here (the store keeps their record).
    async fn refresh(&self, due: &mut HashMap<String, Due>) {
        let live = match self.store.live_allocations().await {
            Ok(live) => live,
            Err(e) => return warn!("probes: cannot read the live allocations: {e}"),
        };
        let mut probed = HashSet::new();
        for record in live {
            let here = self.gateway.is_connected(&record.agent_id);
            let refused = self
                .fleet
                .agent(&record.agent_id)
                .is_some_and(|a| a.probes_refused);
            if !record.state.is_live() || record.host.is_none() || !here || refused {
                continue;
            }
            probed.insert(record.allocation_id.clone());
            let record = Arc::new(record);
            let first = || Instant::now() + anywhere_within(self.config.interval());
            due.entry(record.allocation_id.clone())
                .and_modify(|d| d.record = record.clone())
                .or_insert_with(|| Due {
                    at: first(),
                    record,
                });
        }
        due.retain(|id, _| probed.contains(id));
    }

    /// Whether `record` has a traffic quota its port has used up (as last reported): its
    /// proxy then refuses by design, and probes would spend the buyer's quota. Asked when
    /// a probe is due, not at each refresh (one read per probe, not per allocation).
    async fn quota_used_up(&self, record: &AllocationRecord) -> bool {
        let Some(quota_mb) = record.request.traffic_quota_mb else {
            return false;
        };
        match self.store.usage(&record.allocation_id).await {
            Ok(Some(used)) => {
                let used = used.bytes_in.saturating_add(used.bytes_out);
                used >= quota_mb.saturating_mul(1_000_000)
            }
            _ => false,
        }
    }

    /// Makes the allocations on the modems the fleet asked about (a SIM swap) due now,
    /// after reading the allocations again (one sold a moment ago is among them).
    async fn probe_now(&self, due: &mut HashMap<String, Due>) {
        let wanted = self.fleet.take_probe_requests();
        self.refresh(due).await;
        for entry in due.values_mut() {
            let (agent, imei) = (&entry.record.agent_id, &entry.record.imei);
            if wanted.iter().any(|(a, i)| a == agent && i == imei) {
                entry.at = Instant::now();
            }
        }
    }

    /// Fetches the target directly; judging pauses while that fails. True when it works.
    async fn check_own_path(&self, target: &ProbeTarget) -> bool {
        let works = fetch::direct(target, self.config.timeout()).await.is_ok();
        let was_paused = self.metrics.set_probe_judging_paused(!works);
        match (works, was_paused) {
            (false, false) => {
                warn!(target = %target.authority(), "probes paused: the plane cannot reach its own probe target, so no port is judged until it can")
            }
            (true, true) => info!("probes resumed: the probe target answers again"),
            _ => {}
        }
        works
    }

    /// Probes one allocation and acts on the verdict.
    async fn probe(&self, record: &AllocationRecord, target: &ProbeTarget) {
        let id = &record.allocation_id;
        let password = match self.allocator.password(record) {
            Ok(Some(password)) => password,
            Ok(None) => return,
            Err(e) => {
                return warn!(allocation_id = %id, "probes: cannot open the buyer password: {e}")
            }
        };
        if self.quota_used_up(record).await {
            return;
        }
        let Some(modem_ip) = self.modem_ip(record) else {
            // Rotating, or its IP unknown: nothing to judge.
            return;
        };
        let result = self.measure(record, &password, target, &modem_ip).await;
        if self.modem_ip(record).as_ref() != Some(&modem_ip) {
            // The modem rotated while probed: nothing to judge.
            return;
        }
        if result.failure.is_some() && !self.check_own_path(target).await {
            // The plane's own path failed, not the port: the probe does not count.
            return;
        }
        let (at, outcome) = (result.at, result.failure.map_or("ok", Failure::as_str));
        let first_byte = result.first_byte.filter(|_| result.failure.is_none());
        let verdict = self.book.record(record, result).await;
        self.metrics.probe_finished(outcome);
        let quality = self.allocator.quality();
        quality.probed(&record.agent_id, at, first_byte);
        match verdict {
            Verdict::Steady => {}
            Verdict::Degraded(failure) | Verdict::StillDegraded(failure) => {
                if let Verdict::Degraded(_) = verdict {
                    self.degraded(record, failure).await;
                }
                if self.replacement {
                    self.move_away(record).await;
                }
            }
            Verdict::Recovered => self.recovered(record).await,
        }
    }

    /// The IP the modem reports now; `None` while unknown or rotating.
    fn modem_ip(&self, record: &AllocationRecord) -> Option<String> {
        self.fleet
            .agent(&record.agent_id)
            .and_then(|agent| agent.modems.get(&record.imei).cloned())
            .filter(|modem| !modem.rotating)
            .and_then(|modem| modem.ext_ip)
    }

    /// Both fetches, judged against the IP the modem reports (`modem_ip`): the first
    /// failure wins.
    async fn measure(
        &self,
        record: &AllocationRecord,
        password: &Secret,
        target: &ProbeTarget,
        modem_ip: &str,
    ) -> ProbeResult {
        let mut result = ProbeResult {
            at: self.clock.now(),
            failure: None,
            protocol: None,
            connect: None,
            first_byte: None,
            egress_ip: None,
            modem_ip: Some(modem_ip.to_string()),
            node: self.gateway.node_id().to_string(),
        };
        let host = record.host.as_deref().unwrap_or_default();
        let legs = [("http", record.http_port), ("socks5", record.socks_port)];
        for (protocol, port) in legs {
            let Some(port) = port else { continue };
            let port = fetch::Port {
                host,
                port,
                login: &record.login,
                password,
            };
            let fetched = match protocol {
                "http" => fetch::via_http(port, target, self.config.timeout()).await,
                _ => fetch::via_socks5(port, target, self.config.timeout()).await,
            };
            let failure = match fetched {
                Ok(fetched) => {
                    self.metrics.probe_latency(protocol, fetched.first_byte);
                    if result.first_byte.is_none() {
                        result.connect = Some(fetched.connect);
                        result.first_byte = Some(fetched.first_byte);
                        result.egress_ip = Some(fetched.egress_ip.to_string());
                    }
                    judge(&fetched, modem_ip, self.config.slow())
                }
                Err(failed) => {
                    result.connect = result.connect.or(failed.connect);
                    Some(failed.failure)
                }
            };
            if let Some(failure) = failure {
                result.failure = Some(failure);
                result.protocol = Some(protocol);
                break;
            }
        }
        result
    }

    async fn degraded(&self, record: &AllocationRecord, failure: Failure) {
        let id = &record.allocation_id;
        warn!(allocation_id = %id, imei = %record.imei, reason = failure.as_str(), "allocation degraded: its port fails its probes");
        self.store
            .audit(
                "system",
                AuditAction::AllocationDegraded,
                format!("allocation:{id}"),
                json!({
                    "order_id": record.order_id,
                    "imei": record.imei,
                    "agent_id": record.agent_id,
                    "reason": failure.as_str(),
                    "why": format!("{} probes in a row failed", self.config.failures_to_degrade),
                }),
            )
            .await;
        self.emit(EventType::AllocationDegraded, record, Some(failure))
            .await;
    }

    async fn recovered(&self, record: &AllocationRecord) {
        info!(allocation_id = %record.allocation_id, "allocation recovered: its port passes its probes again");
        self.store
            .audit(
                "system",
                AuditAction::AllocationRecovered,
                format!("allocation:{}", record.allocation_id),
                json!({"order_id": record.order_id, "imei": record.imei, "agent_id": record.agent_id}),
            )
            .await;
        self.emit(EventType::AllocationRecovered, record, None)
            .await;
    }

    async fn emit(&self, kind: EventType, record: &AllocationRecord, failure: Option<Failure>) {
        if self.events.wants(kind) {
            let reason = failure.map(Failure::as_str);
            let object = crate::events::allocation_object_because(record, reason);
            self.events.emit(kind, object).await;
        }
    }

    /// Moves the allocation to another modem, keeping its credentials (when it still is
    /// where it was probed).
    async fn move_away(&self, record: &AllocationRecord) {
        let id = &record.allocation_id;
        match self.allocator.replace_degraded(id, &record.imei).await {
            Ok(Some(moved)) => {
                info!(allocation_id = %id, from = %record.imei, to = %moved.imei, "degraded allocation moved");
                // Its new port is probed at once (the list is read again first).
                self.fleet.request_probe(&moved.agent_id, &moved.imei);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(allocation_id = %id, "degraded allocation could not be moved (tried again after more failures): {e}")
            }
        }
    }
}

/// A fetch that answered: `slow` past the threshold, `ip_mismatch` when the IP seen is
/// not the one the modem reports (compared as addresses when it parses as one).
fn judge(fetched: &fetch::Fetched, modem_ip: &str, slow: Duration) -> Option<Failure> {
    if fetched.first_byte > slow {
        return Some(Failure::Slow);
    }
    let same = match modem_ip.parse::<IpAddr>() {
        Ok(reported) => reported.to_canonical() == fetched.egress_ip.to_canonical(),
        Err(_) => false,
    };
    (!same).then_some(Failure::IpMismatch)
}

/// `interval` ± a fifth, so probes never come in waves.
fn jittered(interval: Duration) -> Duration {
    let unit = farmhand_ops::backoff::random_unit();
    interval.mul_f64(0.8 + 0.4 * unit)
}

/// Anywhere within `interval`: where a newly seen allocation's first probe falls.
fn anywhere_within(interval: Duration) -> Duration {
    farmhand_ops::backoff::full_jitter(interval, farmhand_ops::backoff::random_unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(ms: u64, ip: &str) -> fetch::Fetched {
        fetch::Fetched {
            connect: Duration::from_millis(1),
            first_byte: Duration::from_millis(ms),
            egress_ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn a_fetch_is_judged_on_time_then_on_its_ip() {
        let slow = Duration::from_millis(100);
        assert_eq!(judge(&fetched(5, "127.0.0.9"), "127.0.0.9", slow), None);
        let slow_one = judge(&fetched(500, "127.0.0.9"), "127.0.0.9", slow);
        assert_eq!(slow_one, Some(Failure::Slow));
        let elsewhere = judge(&fetched(5, "127.0.0.8"), "127.0.0.9", slow);
        assert_eq!(elsewhere, Some(Failure::IpMismatch));
        assert_eq!(
            judge(&fetched(5, "::ffff:127.0.0.9"), "127.0.0.9", slow),
            None
        );
        // A modem that reports something that is not an address does not match.
        let garbled = judge(&fetched(5, "127.0.0.9"), "IP_RESET", slow);
        assert_eq!(garbled, Some(Failure::IpMismatch));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let interval = Duration::from_secs(60);
        for _ in 0..100 {
            let d = jittered(interval);
            assert!(
                d >= Duration::from_secs(48) && d <= Duration::from_secs(72),
                "{d:?}"
            );
        }
    }
}
