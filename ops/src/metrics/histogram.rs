//! Fixed-bucket histograms: one atomic count per bucket plus the sum (in microseconds, so
//! it stays an integer) and the count, written as Prometheus `_bucket`/`_sum`/`_count`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bucket upper bounds for request latencies, seconds: 1 ms to 60 s.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A histogram of durations over fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; summed when written).
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds, seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of all observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// `(upper bound, cumulative count)` per bucket, without `+Inf` (that is `count`).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.bounds
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                total += n.load(Ordering::Relaxed);
                (*bound, total)
            })
            .collect()
    }
}

/// Histograms keyed by one label's value (e.g. a command's op).
#[derive(Debug)]
pub struct HistogramVec {
    label: &'static str,
    bounds: &'static [f64],
    series: Mutex<BTreeMap<String, Arc<Histogram>>>,
}

impl HistogramVec {
    /// An empty family labelled `label`, every member over `bounds`.
    pub fn new(label: &'static str, bounds: &'static [f64]) -> Self {
        HistogramVec {
            label,
            bounds,
            series: Mutex::default(),
        }
    }

    /// Records `elapsed` in the series `value`.
    pub fn observe(&self, value: &str, elapsed: Duration) {
        let histogram = match self.series.lock() {
            Ok(mut map) => map
                .entry(value.to_owned())
                .or_insert_with(|| Arc::new(Histogram::new(self.bounds)))
                .clone(),
            Err(_) => return,
        };
        histogram.observe(elapsed);
    }

    /// The label's name.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Every series, ordered by label value.
    pub fn snapshot(&self) -> Vec<(String, Arc<Histogram>)> {
        self.series
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_is_in_seconds() {
        let h = Histogram::new(&[0.01, 0.1, 1.0]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(5));
        assert_eq!(h.cumulative(), vec![(0.01, 1), (0.1, 2), (1.0, 2)]);
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 5.055).abs() < 1e-9);
    }
}
