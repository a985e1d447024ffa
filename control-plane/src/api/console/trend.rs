//! The console's charts: one sample of the fleet a minute, the last day of them kept in a
//! ring (1440 small records: memory stays flat however long the plane runs) — live
//! allocations, modems online and known, the mean command round trip and the share of
//! probes that passed over that minute. ONE task samples, whether or not a page is open;
//! admin pages get the ring with their snapshots.

use crate::api::AppState;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Samples kept: a day of minutes.
const KEPT: usize = 24 * 60;
/// Time between two samples.
const EVERY: Duration = Duration::from_secs(60);

/// One minute of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Unix seconds.
    at: i64,
    /// Allocations that hold a port (pending, active, replaced, releasing).
    allocations: u64,
    modems_online: usize,
    modems: usize,
    /// Mean round trip of the commands answered in the minute, ms (`null`: none).
    command_ms: Option<u64>,
    /// Probes that passed in the minute, percent (`null`: none ran).
    probes_ok_pct: Option<f64>,
}

/// Running totals the next sample's deltas are taken from.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    commands: u64,
    command_s: f64,
    probes: u64,
    probes_ok: u64,
}

/// The ring of samples.
#[derive(Debug, Default)]
pub struct Trends {
    samples: Mutex<VecDeque<Sample>>,
}

impl Sample {
    /// The fleet as the latest point of a chart shows it now (its minute, the live counts;
    /// no deltas: those are the minute samples').
    pub fn now(
        at: time::OffsetDateTime,
        allocations: u64,
        modems_online: usize,
        modems: usize,
    ) -> Self {
        let at = at.unix_timestamp();
        Sample {
            at: at - at.rem_euclid(60),
            allocations,
            modems_online,
            modems,
            command_ms: None,
            probes_ok_pct: None,
        }
    }
}

impl Trends {
    /// Every kept sample, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().copied().collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

fn totals(state: &AppState) -> Totals {
    let latencies = state.metrics.command_latencies();
    let probes_ok = state.metrics.probes("ok");
    let failed: u64 = crate::probe::Failure::ALL
        .iter()
        .map(|f| state.metrics.probes(f.as_str()))
        .sum();
    Totals {
        commands: latencies.iter().map(|(_, n, _)| n).sum(),
        command_s: latencies
            .iter()
            .map(|(_, n, mean)| mean.as_secs_f64() * *n as f64)
            .sum(),
        probes: probes_ok + failed,
        probes_ok,
    }
}

/// Samples the fleet now and every minute until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut before = totals(&state);
    loop {
        let now = totals(&state);
        let live = match state.store.allocation_counts().await {
            Ok(counts) => counts
                .into_iter()
                .filter(|(s, _)| s.holds_port())
                .map(|(_, n)| n)
                .sum(),
            Err(_) => state.trends.samples().last().map_or(0, |s| s.allocations),
        };
        let modems = state.fleet.modems(&crate::fleet::ModemFilter::default());
        let commands = now.commands.saturating_sub(before.commands);
        let probes = now.probes.saturating_sub(before.probes);
        state.trends.push(Sample {
            at: state.fleet.clock().now().unix_timestamp(),
            allocations: live,
            modems_online: modems.iter().filter(|m| m.online).count(),
            modems: modems.len(),
            command_ms: (commands > 0)
                .then(|| ((now.command_s - before.command_s) * 1000.0 / commands as f64) as u64),
            probes_ok_pct: (probes > 0).then(|| {
                let ok = now.probes_ok.saturating_sub(before.probes_ok);
                (ok as f64 * 1000.0 / probes as f64).round() / 10.0
            }),
        });
        before = now;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_a_day_and_a_live_point_sits_on_its_minute() {
        let trends = Trends::default();
        let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(125);
        for _ in 0..KEPT + 5 {
            trends.push(Sample::now(at, 1, 1, 1));
        }
        let samples = trends.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].at, 120);
    }
}
