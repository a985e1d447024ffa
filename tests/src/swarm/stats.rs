//! Latency samples and their summary (count, p50, p90, p99, max) for the swarm's reports.

use serde::Serialize;
use std::time::Duration;

/// A summary of latency samples, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `samples` (nearest-rank percentiles); all zero when empty.
    pub fn of(mut samples: Vec<Duration>) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            // Nearest rank: the smallest sample with at least p% of samples at or below it.
            let idx = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            ms(samples[idx.clamp(1, samples.len()) - 1])
        };
        Summary {
            count: samples.len(),
            p50_ms: rank(50.0),
            p90_ms: rank(90.0),
            p99_ms: rank(99.0),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(samples);
        assert_eq!(s.count, 100);
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
    }

    #[test]
    fn empty_is_all_zero() {
        assert_eq!(Summary::of(Vec::new()), Summary::default());
    }
}
