//! Monotonic totals from counters that reset. ProxySmart's day counters drop to zero at
//! midnight and when the box restarts; an allocation's port can also be re-created (repair,
//! move to another modem), which starts a new counter. The meter keeps, per allocation, the
//! last reading of its current port and the sum of the readings before each reset:
//! `total = base + last`. A reading lower than the last one is a reset — the new reading is
//! ADDED (the traffic since the reset), never the difference; a new port id is a reset too.
//!
//! The states ([`MeterState`], a journal record) live in the journal (`usage_meters` tree),
//! written and flushed before a report is published, so a restarted agent continues from
//! where it was and never reports less than it did. What cannot be seen is lost: traffic
//! between the last reading and a reset, and, across an agent restart, a reset followed by
//! more traffic than the last reading.
//!
//! [`UnreadableCounters`] remembers (in memory) which counters the box prints as garbage,
//! so one that stays unreadable is logged when it becomes so and when it reads again, not
//! every round.

use crate::boxside::proxysmart::counters::{BadCounter, PortCounters, COUNTER_KEYS};
use crate::local::journal::{Journal, JournalError, MeterState};
use farmhand_protocol::{AllocationUsage, ManagedPort, UsageReport};
use std::collections::{HashMap, HashSet};

/// How long the state of an allocation without a port is kept (its port may come back:
/// a repair re-creates it under the same allocation id).
pub const STATE_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

/// Folds a reading of `port_id` into `state` (a missing value leaves its direction as it
/// was; a new port id is a reset).
pub fn advance(state: &mut MeterState, port_id: &str, reading: PortCounters, now_ms: u64) {
    if port_id != state.port_id {
        state.base_in = state.total_in();
        state.base_out = state.total_out();
        (state.last_in, state.last_out) = (0, 0);
        state.port_id = port_id.to_string();
    }
    fold(&mut state.base_in, &mut state.last_in, reading.bytes_in);
    fold(&mut state.base_out, &mut state.last_out, reading.bytes_out);
    state.seen_at_ms = now_ms;
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
            advance(&mut state, &port.port_id, *reading, now_ms);
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
