//! Monotonic totals from counters that reset. ProxySmart's day counters drop to zero at
//! midnight and when the box restarts; an allocation's port can also be re-created (repair,
//! move to another modem), which starts a new counter. The meter keeps, per allocation, the
//! last reading of its current port and the sum of the readings before each reset:
//! `total = base + last`. A reading lower than the last one is a reset — the new reading is
//! ADDED (the traffic since the reset), never the difference; a new port id is a reset too.
//!
//! The states live in the journal (`usage` tree), written and flushed before a report is
//! published, so a restarted agent continues from where it was and never reports less than
//! it did. What cannot be seen is lost: traffic between the last reading and a reset, and,
//! across an agent restart, a reset followed by more traffic than the last reading.
//!
//! [`UnreadableCounters`] remembers (in memory) which counters the box prints as garbage,
//! so one that stays unreadable is logged when it becomes so and when it reads again, not
//! every round.

use super::parse::{BadCounter, PortCounters, COUNTER_KEYS};
use crate::journal::{Journal, JournalError};
use farmhand_protocol::{AllocationUsage, ManagedPort, UsageReport};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// How long the state of an allocation without a port is kept (its port may come back:
/// a repair re-creates it under the same allocation id).
pub const STATE_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

/// The meter's memory of one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterState {
    /// The allocation.
    pub allocation_id: String,
    /// The port whose counters `last_*` are.
    pub port_id: String,
    /// The last reading of that port's download counter.
    pub last_in: u64,
    /// The last reading of that port's upload counter.
    pub last_out: u64,
    /// Downloads counted before the counter's last reset (or before the port changed).
    pub base_in: u64,
    /// Uploads counted before the last reset.
    pub base_out: u64,
    /// When the allocation last had a port (Unix ms), for pruning.
    pub seen_at_ms: u64,
}

impl MeterState {
    /// A state for a port not read yet.
    pub fn new(allocation_id: &str, port_id: &str, now_ms: u64) -> Self {
        MeterState {
            allocation_id: allocation_id.to_string(),
            port_id: port_id.to_string(),
            last_in: 0,
            last_out: 0,
            base_in: 0,
            base_out: 0,
            seen_at_ms: now_ms,
        }
    }

    /// Downloads so far.
    pub fn total_in(&self) -> u64 {
        self.base_in.saturating_add(self.last_in)
    }

    /// Uploads so far.
    pub fn total_out(&self) -> u64 {
        self.base_out.saturating_add(self.last_out)
    }

    /// Folds in a reading of `port_id` (a missing value leaves its direction as it was).
    pub fn advance(&mut self, port_id: &str, reading: PortCounters, now_ms: u64) {
        if port_id != self.port_id {
            self.base_in = self.total_in();
            self.base_out = self.total_out();
            (self.last_in, self.last_out) = (0, 0);
            self.port_id = port_id.to_string();
        }
        fold(&mut self.base_in, &mut self.last_in, reading.bytes_in);
        fold(&mut self.base_out, &mut self.last_out, reading.bytes_out);
        self.seen_at_ms = now_ms;
    }
}

/// A lower reading means the counter restarted from zero: what it had counted goes into
/// the base, and the new reading is the traffic since.
fn fold(base: &mut u64, last: &mut u64, reading: Option<u64>) {
    let Some(reading) = reading else {
        return;
    };
    if reading < *last {
        *base = base.saturating_add(*last);
    }
    *last = reading;
}

/// Applies readings to the journaled states and builds the report.
#[derive(Debug, Clone)]
pub struct Meter {
    journal: Journal,
}

impl Meter {
    /// A meter over `journal`'s `usage` tree.
    pub fn new(journal: Journal) -> Self {
        Meter { journal }
    }

    /// One round: `readings` (port id → counters) applied to each managed port's
    /// allocation, persisted (flushed), then reported — every managed allocation with a
    /// state, read this round or not. States of allocations without a port for longer than
    /// [`STATE_RETENTION_MS`] are dropped.
    pub async fn apply(
        &self,
        ports: &[ManagedPort],
        readings: &HashMap<String, PortCounters>,
        now_ms: u64,
    ) -> Result<UsageReport, JournalError> {
        let mut states: HashMap<String, MeterState> = self
            .journal
            .meter_states()?
            .into_iter()
            .map(|s| (s.allocation_id.clone(), s))
            .collect();
        let mut changed = Vec::new();
        let mut allocations = Vec::with_capacity(ports.len());
        for port in ports {
            let state = states.remove(&port.allocation_id);
            let Some(reading) = readings.get(&port.port_id) else {
                if let Some(state) = state {
                    allocations.push(usage(&state));
                }
                continue;
            };
            let mut state = state
                .unwrap_or_else(|| MeterState::new(&port.allocation_id, &port.port_id, now_ms));
            state.advance(&port.port_id, *reading, now_ms);
            allocations.push(usage(&state));
            changed.push(state);
        }
        let stale: Vec<String> = states
            .into_values()
            .filter(|s| now_ms.saturating_sub(s.seen_at_ms) > STATE_RETENTION_MS)
            .map(|s| s.allocation_id)
            .collect();
        self.journal.update_meter_states(&changed, &stale).await?;
        Ok(UsageReport {
            measured_at_ms: now_ms,
            allocations,
        })
    }
}

/// A change in whether a port's traffic counter can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterChange {
    /// It could be read (or was not seen yet) and now cannot: logged as a warning.
    Unreadable,
    /// It was unreadable and reads again: logged as info.
    Readable,
}

/// The counters (port id, counter key) that were unreadable at their last reading.
/// A box that keeps printing garbage for a counter would otherwise log a warning every
/// round, for as long as the port lives.
#[derive(Debug, Default)]
pub struct UnreadableCounters {
    current: HashSet<(String, &'static str)>,
}

impl UnreadableCounters {
    /// Takes one port's reading (`unreadable` as `parse::port_counters` reports it), logs
    /// what changed and returns it.
    pub fn observe(
        &mut self,
        port_id: &str,
        unreadable: &[(&'static str, BadCounter)],
    ) -> Vec<(&'static str, CounterChange)> {
        let mut changes = Vec::new();
        for counter in COUNTER_KEYS {
            let key = (port_id.to_string(), counter);
            match unreadable.iter().find(|(c, _)| *c == counter) {
                Some((_, e)) if self.current.insert(key.clone()) => {
                    tracing::warn!(port = port_id, counter, value = %e.shown, "unreadable ProxySmart traffic counter; skipping it until it reads again");
                    changes.push((counter, CounterChange::Unreadable));
                }
                None if self.current.remove(&key) => {
                    tracing::info!(
                        port = port_id,
                        counter,
                        "ProxySmart traffic counter readable again"
                    );
                    changes.push((counter, CounterChange::Readable));
                }
                _ => {}
            }
        }
        changes
    }

    /// Forgets the counters of ports no longer managed (released or moved).
    pub fn retain(&mut self, ports: &[ManagedPort]) {
        self.current
            .retain(|(port_id, _)| ports.iter().any(|p| &p.port_id == port_id));
    }
}

fn usage(state: &MeterState) -> AllocationUsage {
    AllocationUsage {
        allocation_id: state.allocation_id.clone(),
        bytes_in: state.total_in(),
        bytes_out: state.total_out(),
    }
}

#[cfg(test)]
#[path = "meter_tests.rs"]
mod tests;
