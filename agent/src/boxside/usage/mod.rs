//! Traffic metering: one task reads ProxySmart's per-port counters
//! (`bandwidth_report_all`) every `[usage] interval_s`, turns them into bytes
//! (`proxysmart::counters`), folds them into monotonic per-allocation totals that survive
//! counter resets and agent restarts (`meter`, state in the journal), and publishes each
//! round's [`UsageReport`] for the session to send to the plane (`usage` message).
//!
//! A round is skipped — nothing published, nothing lost — while ProxySmart cannot be read
//! (warned once per outage, and its end logged); no ProxySmart call is made while the agent
//! manages no port.

pub mod meter;

pub use meter::{Meter, UnreadableCounters};

use crate::base::clock::now_ms;
use crate::boxside::proxysmart::counters::{self, PortCounters};
use crate::boxside::proxysmart::{ProxysmartClient, ProxysmartError};
use crate::local::journal::{Journal, JournalError};
use farmhand_protocol::UsageReport;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The latest report (`None` until the first round that metered a port).
pub type LatestUsage = Option<Arc<UsageReport>>;

/// Where the session finds the meter's reports.
#[derive(Debug, Clone)]
pub struct UsageHandle {
    rx: watch::Receiver<LatestUsage>,
}

impl UsageHandle {
    /// A handle fed by hand instead of by a meter task (tests, embedding).
    pub fn manual() -> (watch::Sender<LatestUsage>, UsageHandle) {
        let (tx, rx) = watch::channel(None);
        (tx, UsageHandle { rx })
    }

    /// A receiver that sees every new report.
    pub fn subscribe(&self) -> watch::Receiver<LatestUsage> {
        self.rx.clone()
    }
}

/// Why a round produced no report.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("cannot read the traffic counters: {0}")]
    Proxysmart(#[from] ProxysmartError),
    #[error("cannot keep the usage totals: {0}")]
    Journal(#[from] JournalError),
}

/// Starts the meter; it runs a round at once and then every `interval` until `shutdown`.
/// Await the task before reopening the journal: it holds a handle on it.
pub fn spawn(
    client: ProxysmartClient,
    journal: Journal,
    interval: Duration,
    shutdown: CancellationToken,
) -> (UsageHandle, JoinHandle<()>) {
    let (tx, handle) = UsageHandle::manual();
    let task = tokio::spawn(meter_loop(client, journal, interval, tx, shutdown));
    (handle, task)
}

async fn meter_loop(
    client: ProxysmartClient,
    journal: Journal,
    interval: Duration,
    tx: watch::Sender<LatestUsage>,
    shutdown: CancellationToken,
) {
    let meter = Meter::new(journal.clone());
    let mut unreadable = UnreadableCounters::default();
    let mut skipping = Skipping::default();
    let mut ticks = tokio::time::interval(interval);
    // A slow ProxySmart delays the next round instead of causing a burst of them.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = round(&client, &journal, &meter, &mut unreadable) => result,
        };
        skipping.observe(result.as_ref().err());
        if let Ok(Some(report)) = result {
            tx.send_replace(Some(Arc::new(report)));
        }
    }
}

/// Logs skipped rounds once per outage, not once per interval: a ProxySmart that is down
/// for a night would otherwise fill the journal with the same warning.
#[derive(Debug, Default)]
struct Skipping {
    /// Rounds skipped in a row.
    rounds: u64,
}

impl Skipping {
    /// Records a round's outcome (`Some(error)`: skipped); returns whether it logged.
    fn observe(&mut self, error: Option<&RoundError>) -> bool {
        match (error, self.rounds) {
            (Some(e), 0) => {
                self.rounds = 1;
                tracing::warn!(error = %e, "usage metering round skipped; retrying every interval");
                true
            }
            (Some(e), _) => {
                self.rounds += 1;
                tracing::debug!(error = %e, rounds = self.rounds, "usage metering round skipped");
                false
            }
            (None, 0) => false,
            (None, rounds) => {
                self.rounds = 0;
                tracing::info!(skipped = rounds, "usage metering resumed");
                true
            }
        }
    }
}

/// Reads the counters of every managed port and applies them; `None` without ports.
async fn round(
    client: &ProxysmartClient,
    journal: &Journal,
    meter: &Meter,
    unreadable: &mut UnreadableCounters,
) -> Result<Option<UsageReport>, RoundError> {
    let ports = journal.ports()?;
    unreadable.retain(&ports);
    if ports.is_empty() {
        // Still prunes the states of long-gone allocations.
        meter.apply(&[], &HashMap::new(), now_ms()).await?;
        return Ok(None);
    }
    let raw = client.bandwidth_report_all().await?;
    let readings: HashMap<String, PortCounters> = ports
        .iter()
        .filter_map(|p| {
            let entry = raw.get(&p.port_id)?;
            let (counters, bad) = counters::port_counters(entry);
            unreadable.observe(&p.port_id, &bad);
            Some((p.port_id.clone(), counters))
        })
        .collect();
    Ok(Some(meter.apply(&ports, &readings, now_ms()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_rounds_are_logged_once_per_outage() {
        let mut skipping = Skipping::default();
        let down = RoundError::Proxysmart(ProxysmartError::Timeout);
        let logged: Vec<bool> = [
            None,
            Some(&down),
            Some(&down),
            Some(&down),
            None,
            None,
            Some(&down),
        ]
        .into_iter()
        .map(|outcome| skipping.observe(outcome))
        .collect();
        // The first skip warns, the recovery says so once, a new outage warns again.
        assert_eq!(logged, [false, true, false, false, true, false, true]);
    }
}
