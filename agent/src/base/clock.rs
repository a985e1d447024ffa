//! The wall clock, in the Unix milliseconds every record and message carries. One function
//! so that deadlines, expiries and journal stamps all read time the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
