//! Per-port limits, enforced for real on the forwarded bytes once a port is applied (as
//! ProxySmart makes stored settings live on `apply_port`):
//! - a traffic quota (`bw_quota`, MB = 10^6 bytes; `QUOTA_DIRECTION` `in`, `out`, or both
//!   by default): the bytes that would cross it are not forwarded, the connection ends, and
//!   the port refuses new traffic and shows `IS_OVER_QUOTA: 1` until the quota is raised.
//!   Quota usage is its own counter: the nightly traffic reset does not clear it (the
//!   simulator models a lifetime quota whatever `QUOTA_TYPE` says);
//! - speed limits (`bandlimin` for downloads, `bandlimout` for uploads, kbit/s): one token
//!   bucket per direction, shared by every connection of the port. A chunk spends its bytes
//!   when it is read and is written once the bucket has paid for it, so a client never
//!   receives faster than the limit beyond one small burst.
//!
//! "", "0" or an unparsable value means no limit (`store_port` refuses non-numbers).

use super::state::Counters;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes in a ProxySmart MB.
pub(crate) const MB: u64 = 1_000_000;
/// The bucket holds at most this long's worth of tokens (the burst after idling).
const BURST: Duration = Duration::from_millis(50);
/// …but at least this many bytes, so one TCP segment always fits.
const MIN_BURST_BYTES: f64 = 1500.0;

/// Which way bytes flow, in ProxySmart's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Towards the client (download): `…_in`, `bandlimin`.
    In,
    /// Towards the origin (upload): `…_out`, `bandlimout`.
    Out,
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaDirection {
    In,
    Out,
    Both,
}

impl QuotaDirection {
    /// `QUOTA_DIRECTION` as stored: "in", "out", anything else counts both ways.
    pub fn parse(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "in" => QuotaDirection::In,
            "out" => QuotaDirection::Out,
            _ => QuotaDirection::Both,
        }
    }

    fn counts(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (QuotaDirection::Both, _)
                | (QuotaDirection::In, Direction::In)
                | (QuotaDirection::Out, Direction::Out)
        )
    }
}

/// The limits of one applied port.
#[derive(Debug)]
pub(crate) struct PortLimits {
    quota_bytes: Option<u64>,
    quota_direction: QuotaDirection,
    download: Option<TokenBucket>,
    upload: Option<TokenBucket>,
}

impl PortLimits {
    /// From the stored settings (`QUOTA` in MB, `bandlimin`/`bandlimout` in kbit/s).
    pub fn from_stored(quota: &str, direction: &str, bandlimin: &str, bandlimout: &str) -> Self {
        PortLimits {
            quota_bytes: positive(quota).map(|mb| mb.saturating_mul(MB)),
            quota_direction: QuotaDirection::parse(direction),
            download: positive(bandlimin).map(TokenBucket::new),
            upload: positive(bandlimout).map(TokenBucket::new),
        }
    }

    /// Whether the quota is used up: the port refuses new traffic.
    pub fn over_quota(&self, counters: &Counters) -> bool {
        self.quota_bytes
            .is_some_and(|limit| counters.quota_used.load(Ordering::Relaxed) >= limit)
    }

    /// Lets `n` bytes through in `direction`: counts them against the quota (an error when
    /// they would cross it: they must not be forwarded) and waits until the speed limit
    /// has paid for them.
    pub async fn admit(
        &self,
        counters: &Counters,
        direction: Direction,
        n: usize,
    ) -> io::Result<()> {
        if let Some(limit) = self.quota_bytes {
            if self.quota_direction.counts(direction) {
                let used = counters.quota_used.fetch_add(n as u64, Ordering::Relaxed);
                if used.saturating_add(n as u64) > limit {
                    return Err(io::Error::other("the port's traffic quota is used up"));
                }
            }
        }
        let bucket = match direction {
            Direction::In => self.download.as_ref(),
            Direction::Out => self.upload.as_ref(),
        };
        if let Some(wait) = bucket.map(|b| b.reserve(n)).filter(|w| !w.is_zero()) {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// A positive integer setting; "", "0" and non-numbers mean "no limit".
pub(crate) fn positive(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|v| *v > 0)
}

/// A token bucket in bytes: tokens accrue at the rate up to the burst; a reservation may
/// take the balance below zero, and the reserver waits until it is paid back — so
/// concurrent connections share the rate instead of each getting all of it.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    bytes_per_s: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket for `kbit` kbit/s (1 kbit = 1000 bits).
    pub fn new(kbit: u64) -> Self {
        let bytes_per_s = kbit as f64 * 1000.0 / 8.0;
        let burst = (bytes_per_s * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        TokenBucket {
            bytes_per_s,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Spends `n` bytes now; returns how long to wait before sending them.
    pub fn reserve(&self, n: usize) -> Duration {
        self.reserve_at(n, Instant::now())
    }

    fn reserve_at(&self, n: usize, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let now = now.max(last);
        let refilled = (tokens + (now - last).as_secs_f64() * self.bytes_per_s).min(self.burst);
        let left = refilled - n as f64;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.bytes_per_s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_to_limits() {
        assert_eq!(positive(""), None);
        assert_eq!(positive("0"), None);
        assert_eq!(positive(" 12 "), Some(12));
        assert_eq!(positive("1.5"), None);
        let limits = PortLimits::from_stored("2", "", "800", "");
        assert_eq!(limits.quota_bytes, Some(2 * MB));
        assert_eq!(limits.quota_direction, QuotaDirection::Both);
        assert!(limits.download.is_some() && limits.upload.is_none());
        assert_eq!(QuotaDirection::parse("IN"), QuotaDirection::In);
        assert_eq!(QuotaDirection::parse("out"), QuotaDirection::Out);
    }

    #[test]
    fn a_bucket_paces_bytes_at_its_rate() {
        // 800 kbit/s = 100,000 bytes/s; the burst is 5,000 bytes.
        let bucket = TokenBucket::new(800);
        let t0 = bucket.state.lock().unwrap().1;
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round() as u64;
        assert_eq!(bucket.reserve_at(5_000, t0), Duration::ZERO);
        assert_eq!(ms(bucket.reserve_at(50_000, t0)), 500);
        // A second reserver queues behind the first one's debt.
        assert_eq!(ms(bucket.reserve_at(10_000, t0)), 600);
        // Paid back at the rate: 300 ms later the debt is 30,000 bytes.
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(ms(bucket.reserve_at(0, t1)), 300);
        // Idle time refills only up to the burst.
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(bucket.reserve_at(5_000, t2), Duration::ZERO);
        assert_eq!(ms(bucket.reserve_at(1_000, t2)), 10);
    }

    #[tokio::test]
    async fn the_quota_stops_the_chunk_that_would_cross_it() {
        let counters = Counters::default();
        let limits = PortLimits::from_stored("1", "in", "", "");
        limits
            .admit(&counters, Direction::Out, 5 * MB as usize)
            .await
            .unwrap();
        assert!(!limits.over_quota(&counters), "uploads do not count");
        limits
            .admit(&counters, Direction::In, MB as usize - 10)
            .await
            .unwrap();
        assert!(limits.admit(&counters, Direction::In, 11).await.is_err());
        assert!(limits.over_quota(&counters));
        counters.reset();
        assert!(
            limits.over_quota(&counters),
            "the nightly reset keeps quotas"
        );
    }
}
