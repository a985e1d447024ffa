//! Churn: agents dropping and reconnecting continuously. The driver drops one welcomed
//! agent's connection every `1/rate` seconds, round-robin through the swarm (an abrupt
//! drop, as a network failure would do it: no close handshake), and reports how many it
//! dropped, how long the dropped agents took to be welcomed again (from their first
//! reconnection attempt, so the agents' own backoff is not counted), and what the plane
//! refused meanwhile.

use super::agent::Kick;
use super::stats::Summary;
use super::Swarm;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a churn run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    /// Drops asked for per second.
    pub offered_per_s: f64,
    /// How long the driver ran, seconds (the reconnections after it are awaited too).
    pub window_s: f64,
    /// Connections dropped.
    pub dropped: usize,
    /// Drops skipped because that agent was between connections already.
    pub skipped: usize,
    /// Dropped agents welcomed again (equal to `dropped` when all came back).
    pub reconnected: usize,
    /// Time from the first reconnection attempt to `welcome` + inventory.
    pub reconnect: Summary,
    /// Fewest agents online at once during the run (sampled every 20 ms).
    pub min_online: usize,
    /// Refusals by kind during the run (`retry_later`, `http 503`, `duplicate_agent`…).
    pub refusals: BTreeMap<String, usize>,
    /// Connection attempts that failed with an error during the run.
    pub connection_errors: usize,
}

/// Drops `rate` connections a second for `window`, then waits (up to `limit`) for every
/// agent to be back.
pub async fn churn(
    swarm: &Swarm,
    rate: f64,
    window: Duration,
    limit: Duration,
) -> anyhow::Result<ChurnReport> {
    let fleet = &swarm.fleet;
    fleet.take_reconnects();
    let errors_before = fleet.errors();
    let refusals_before = fleet.refusals();
    let mut report = ChurnReport {
        offered_per_s: rate,
        min_online: fleet.online(),
        ..ChurnReport::default()
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sample = tokio::time::interval(Duration::from_millis(20));
    let mut next = 0usize;
    while started.elapsed() < window {
        tokio::select! {
            _ = tick.tick() => {
                if kick(&swarm.kicks, &mut next) {
                    report.dropped += 1;
                } else {
                    report.skipped += 1;
                }
            }
            _ = sample.tick() => report.min_online = report.min_online.min(fleet.online()),
        }
    }
    report.window_s = started.elapsed().as_secs_f64();
    let agents = swarm.agents();
    swarm.wait_online(limit, |n| n == agents).await?;
    let samples = fleet.take_reconnects();
    report.reconnected = samples.len();
    report.reconnect = Summary::of(samples);
    report.connection_errors = fleet.errors() - errors_before;
    report.refusals = fleet.refusals();
    for (kind, n) in &refusals_before {
        if let Some(count) = report.refusals.get_mut(kind) {
            *count -= n;
        }
    }
    report.refusals.retain(|_, n| *n > 0);
    Ok(report)
}

/// Kicks the agent at `next` (round-robin); false when it was not welcomed.
fn kick(kicks: &[Arc<Kick>], next: &mut usize) -> bool {
    if kicks.is_empty() {
        return false;
    }
    let kicked = kicks[*next % kicks.len()].kick();
    *next = next.wrapping_add(1);
    kicked
}
