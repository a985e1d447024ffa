//! Traffic usage the agent measures on its box and reports to the plane (`usage`).
//!
//! The totals are per allocation and **monotonic**: the agent folds ProxySmart's counters,
//! which reset at midnight and when the box restarts, into running totals it keeps across
//! those resets and across its own restarts. A receiver may therefore keep the highest total
//! it has seen and never lower it.

use serde::{Deserialize, Serialize};

/// Most entries in one `usage` message; an agent with more allocations sends several
/// messages, so a report always fits in a frame (about 100 bytes per entry).
pub const MAX_USAGE_ENTRIES: usize = 2000;

/// One measurement of every allocation the agent meters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// When ProxySmart's counters were read, Unix ms on the agent's clock.
    pub measured_at_ms: u64,
    /// At most [`MAX_USAGE_ENTRIES`] totals.
    pub allocations: Vec<AllocationUsage>,
}

/// The running totals of one allocation since its port was first metered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationUsage {
    /// The allocation.
    pub allocation_id: String,
    /// Bytes sent towards the buyer (downloads), ProxySmart's `…_in` counters.
    pub bytes_in: u64,
    /// Bytes sent by the buyer towards the Internet (uploads), ProxySmart's `…_out`.
    pub bytes_out: u64,
}
