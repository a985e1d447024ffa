//! The few Prometheus primitives both binaries need, hand-written and
//! dependency-free — counters (plain and labelled), fixed-bucket histograms, and [`Text`],
//! the writer of the text exposition format (version 0.0.4) that `/metrics` serves.
//!
//! Values are atomics or short mutex sections, so recording on a hot path is cheap; gauges
//! are not stored at all: the scrape handler computes them from live state and writes them
//! with [`Text::gauge`]. Label values must come from small fixed sets (an op name, an error
//! code, a matched route), never from user input, so the number of series stays bounded.

mod check;
mod histogram;
mod text;

pub use check::validate;
pub use histogram::{Histogram, HistogramVec, LATENCY_BUCKETS_S};
pub use text::{Text, CONTENT_TYPE};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters keyed by label values (`N` labels, named when written out).
#[derive(Debug)]
pub struct CounterVec<const N: usize> {
    labels: [&'static str; N],
    values: Mutex<BTreeMap<[String; N], u64>>,
}

impl<const N: usize> CounterVec<N> {
    /// An empty family with these label names.
    pub fn new(labels: [&'static str; N]) -> Self {
        CounterVec {
            labels,
            values: Mutex::default(),
        }
    }

    /// Adds one to the series with these label values.
    pub fn inc(&self, values: [&str; N]) {
        if let Ok(mut map) = self.values.lock() {
            *map.entry(values.map(str::to_owned)).or_default() += 1;
        }
    }

    /// Creates the series at 0 (so dashboards see it before the first event).
    pub fn touch(&self, values: [&str; N]) {
        if let Ok(mut map) = self.values.lock() {
            map.entry(values.map(str::to_owned)).or_default();
        }
    }

    /// The count of one series (0 if it never happened).
    pub fn get(&self, values: [&str; N]) -> u64 {
        let key = values.map(str::to_owned);
        self.values
            .lock()
            .map(|m| m.get(&key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Every series, ordered by label values.
    pub fn snapshot(&self) -> Vec<([String; N], u64)> {
        self.values
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// The label names.
    pub fn label_names(&self) -> [&'static str; N] {
        self.labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_vec_counts_per_label_set() {
        let c = CounterVec::new(["op", "outcome"]);
        c.inc(["provision", "ok"]);
        c.inc(["provision", "ok"]);
        c.touch(["release", "ok"]);
        assert_eq!(c.get(["provision", "ok"]), 2);
        assert_eq!(c.get(["release", "ok"]), 0);
        assert_eq!(c.snapshot().len(), 2);
    }
}
