//! ProxySmart's clock: timestamps such as `PROXY_VALID_BEFORE` and `CREATED_AT` are
//! box-local time without a zone ("2026-02-10T14:14:26"), so writing an expiry needs the
//! box's UTC offset.
//!
//! `box_utc_offset` in `[proxysmart]` is either a fixed offset ("+02:00", "UTC") or "auto"
//! (the default). In auto mode the offset is learned from the `CREATED_AT` of a port the
//! agent has just stored: the box stamped it between two readings of our clock, so
//! `CREATED_AT − now` rounded to 15 minutes is the zone (every real zone is a multiple of
//! 15 minutes; the rounding absorbs request latency and a few minutes of clock skew).
//! Until the first port is created the offset is the last one learned (kept in the journal)
//! or 0. A wrong guess is corrected at once: `provision` re-stores the port's expiry when
//! the learned offset differs from the one it used.

use crate::config::proxysmart::{is_zone_offset, BoxUtcOffset};
use std::sync::atomic::{AtomicI64, Ordering};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// ProxySmart's timestamp format.
const STAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
/// Real zones are whole quarter hours.
const QUARTER_HOUR_S: i64 = 15 * 60;
/// A learning window wider than this (a very slow store) cannot be rounded reliably.
const MAX_WINDOW_MS: u64 = 5 * 60 * 1000;
/// "No offset learned yet".
const UNKNOWN: i64 = i64::MIN;

/// The box's offset in use: configured, learned, or 0.
#[derive(Debug)]
pub struct BoxClock {
    configured: BoxUtcOffset,
    learned: AtomicI64,
}

impl Default for BoxClock {
    fn default() -> Self {
        BoxClock::new(BoxUtcOffset::Auto, None)
    }
}

impl BoxClock {
    /// A clock with `configured`, starting from `remembered` (a previously learned offset).
    pub fn new(configured: BoxUtcOffset, remembered: Option<i64>) -> Self {
        let learned = remembered.filter(|s| is_zone_offset(*s)).unwrap_or(UNKNOWN);
        BoxClock {
            configured,
            learned: AtomicI64::new(learned),
        }
    }

    /// Seconds east of UTC used for the next timestamp.
    pub fn offset_s(&self) -> i64 {
        match self.configured {
            BoxUtcOffset::Fixed(s) => s,
            BoxUtcOffset::Auto => match self.learned.load(Ordering::Relaxed) {
                UNKNOWN => 0,
                s => s,
            },
        }
    }

    /// `unix_ms` as the box prints it; `None` when out of range.
    pub fn stamp(&self, unix_ms: u64) -> Option<String> {
        let secs = i64::try_from(unix_ms / 1000).ok()?;
        let at = OffsetDateTime::from_unix_timestamp(secs.checked_add(self.offset_s())?).ok()?;
        at.format(STAMP).ok()
    }

    /// Learns from a port the box created between our clock readings `before_ms` and
    /// `after_ms` (Unix ms). Returns the new offset when it differs from the one in use
    /// (the caller re-writes what it stamped and persists it); `None` otherwise.
    pub fn learn(&self, created_at: &str, before_ms: u64, after_ms: u64) -> Option<i64> {
        let observed = observed_offset(created_at, before_ms, after_ms)?;
        match self.configured {
            BoxUtcOffset::Fixed(s) => {
                if s != observed {
                    tracing::warn!(configured_s = s, observed_s = observed, "proxysmart.box_utc_offset disagrees with the box's CREATED_AT; keeping the configured offset");
                }
                None
            }
            BoxUtcOffset::Auto => {
                let before = self.offset_s();
                self.learned.store(observed, Ordering::Relaxed);
                (observed != before).then(|| {
                    tracing::info!(
                        offset_s = observed,
                        "learned the ProxySmart box's UTC offset"
                    );
                    observed
                })
            }
        }
    }
}

/// `CREATED_AT` (box-local) minus our clock at the time, rounded to a quarter hour.
fn observed_offset(created_at: &str, before_ms: u64, after_ms: u64) -> Option<i64> {
    if after_ms < before_ms || after_ms - before_ms > MAX_WINDOW_MS {
        return None;
    }
    let created = PrimitiveDateTime::parse(created_at.trim(), STAMP).ok()?;
    let created_s = created.assume_utc().unix_timestamp();
    let mid_s = i64::try_from((before_ms + (after_ms - before_ms) / 2) / 1000).ok()?;
    let raw = created_s - mid_s;
    // Nearest quarter hour (floor of x + ½, which also rounds negative offsets right).
    let rounded = (raw + QUARTER_HOUR_S / 2).div_euclid(QUARTER_HOUR_S) * QUARTER_HOUR_S;
    is_zone_offset(rounded).then_some(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-02-10T14:14:26Z
    const T_MS: u64 = 1_770_732_866_000;

    #[test]
    fn stamps_in_box_local_time() {
        let utc = BoxClock::new(BoxUtcOffset::Fixed(0), None);
        assert_eq!(utc.stamp(T_MS + 999).unwrap(), "2026-02-10T14:14:26");
        let plus2 = BoxClock::new(BoxUtcOffset::Fixed(7200), None);
        assert_eq!(plus2.stamp(T_MS).unwrap(), "2026-02-10T16:14:26");
        assert_eq!(
            BoxClock::default().stamp(T_MS).unwrap(),
            "2026-02-10T14:14:26"
        );
        assert!(utc.stamp(u64::MAX).is_none());
    }

    #[test]
    fn learns_the_offset_from_created_at() {
        let clock = BoxClock::default();
        // The box is UTC+3 and its clock 40 s ahead; the store took 2 s.
        let learned = clock.learn("2026-02-10T17:15:07", T_MS, T_MS + 2_000);
        assert_eq!(learned, Some(3 * 3600));
        assert_eq!(clock.offset_s(), 3 * 3600);
        assert_eq!(clock.stamp(T_MS).unwrap(), "2026-02-10T17:14:26");
        // The same offset again is not a change.
        assert_eq!(clock.learn("2026-02-10T17:14:27", T_MS, T_MS + 10), None);
        // A box on UTC−05:30 (rounding works both ways).
        let learned = clock.learn("2026-02-10T08:44:20", T_MS, T_MS + 10);
        assert_eq!(learned, Some(-5 * 3600 - 1800));
    }

    #[test]
    fn ignores_what_it_cannot_trust() {
        let clock = BoxClock::new(BoxUtcOffset::Auto, Some(3600));
        assert_eq!(clock.offset_s(), 3600);
        assert_eq!(clock.learn("", T_MS, T_MS + 10), None);
        assert_eq!(clock.learn("yesterday", T_MS, T_MS + 10), None);
        assert_eq!(clock.learn("2026-02-12T14:14:26", T_MS, T_MS + 10), None);
        assert_eq!(
            clock.learn("2026-02-10T14:14:26", T_MS, T_MS + 600_000),
            None
        );
        assert_eq!(clock.offset_s(), 3600);
        // A configured offset wins over what the box shows.
        let fixed = BoxClock::new(BoxUtcOffset::Fixed(0), Some(3600));
        assert_eq!(fixed.learn("2026-02-10T16:14:26", T_MS, T_MS + 10), None);
        assert_eq!(fixed.offset_s(), 0);
        assert_eq!(BoxClock::new(BoxUtcOffset::Auto, Some(7)).offset_s(), 0);
    }
}
