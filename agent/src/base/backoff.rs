//! Reconnect and retry pacing: exponential backoff with full jitter, reset after a healthy
//! session, and the plane's `retry_after_s` honoured with jitter added.
//!
//! Full jitter (a uniform delay in `[0, min(max, initial * 2^attempt)]`) spreads a fleet's
//! reconnects after a control-plane restart instead of synchronising them.

use farmhand_ops::backoff;
use std::time::Duration;

/// A named backoff policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// A session that lasted this long resets the backoff.
    pub healthy_after: Duration,
}

/// Reconnecting to the control plane: 1 s doubling to 60 s, reset after 60 s of health.
pub const RECONNECT: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
    healthy_after: Duration::from_secs(60),
};

/// Retrying an idempotent ProxySmart read that failed fast (connection refused or reset,
/// HTTP 5xx): ceilings of 200 ms then 400 ms, so the retries add well under a second to a
/// command whose deadline is seconds away. Never used for writes (`store_port`).
pub const PROXYSMART_READ: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(1),
    healthy_after: Duration::ZERO,
};
/// Attempts of one idempotent ProxySmart read (the first try included).
pub const PROXYSMART_READ_ATTEMPTS: u32 = 3;

/// Backoff state for one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    /// Starts at the first attempt.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, attempt: 0 }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        backoff::doubling(self.policy.initial, self.policy.max, self.attempt)
    }

    /// The next delay, uniformly jittered in `[0, ceiling]`; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jitter(self.ceiling());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Records that a session lasted `lived`; a healthy one resets the backoff.
    pub fn session_ended(&mut self, lived: Duration) {
        if lived >= self.policy.healthy_after {
            self.reset();
        }
    }

    /// The wait when the plane said "retry after": at least `retry_after` (at most
    /// [`MAX_RETRY_AFTER`], whatever the plane sent), plus up to half of it (at least one
    /// second) of jitter; also advances the attempt count.
    pub fn retry_after(&mut self, retry_after: Duration) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let retry_after = retry_after.min(MAX_RETRY_AFTER);
        retry_after + jitter((retry_after / 2).max(Duration::from_secs(1)))
    }
}

/// The longest "retry after" the agent honours: a plane (or anything posing as one) cannot
/// park an agent for days, nor overflow its timers.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A uniform random duration in `[0, ceiling]`.
pub fn jitter(ceiling: Duration) -> Duration {
    backoff::full_jitter(ceiling, backoff::random_unit())
}

/// A random number from the system CSPRNG (falls back to the clock if it is unavailable).
pub fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_retry_after_is_clamped_not_a_panic() {
        let mut far = Backoff::new(RECONNECT);
        let wait = far.retry_after(Duration::from_secs(u64::MAX));
        assert!(
            wait >= MAX_RETRY_AFTER && wait <= MAX_RETRY_AFTER * 3 / 2,
            "{wait:?}"
        );
    }

    #[test]
    fn delays_stay_within_doubling_ceilings_up_to_the_max() {
        let mut b = Backoff::new(RECONNECT);
        let expected = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for secs in expected {
            assert_eq!(b.ceiling(), Duration::from_secs(secs));
            for _ in 0..20 {
                let mut probe = b.clone();
                assert!(probe.next_delay() <= Duration::from_secs(secs));
            }
            b.next_delay();
        }
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(
            b.ceiling(),
            Duration::from_secs(60),
            "no overflow after many attempts"
        );
    }

    #[test]
    fn jitter_is_spread_not_constant() {
        let samples: Vec<Duration> = (0..50).map(|_| jitter(Duration::from_secs(60))).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(
            samples.iter().any(|d| *d != samples[0]),
            "full jitter must vary"
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn healthy_session_resets_and_short_one_does_not() {
        let mut b = Backoff::new(RECONNECT);
        b.next_delay();
        b.next_delay();
        b.session_ended(Duration::from_secs(5));
        assert_eq!(b.ceiling(), Duration::from_secs(4));
        b.session_ended(Duration::from_secs(61));
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_a_floor_with_bounded_jitter() {
        let mut b = Backoff::new(RECONNECT);
        for _ in 0..20 {
            let d = b.retry_after(Duration::from_secs(30));
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_secs(45),
                "{d:?}"
            );
        }
        let d = b.retry_after(Duration::ZERO);
        assert!(d <= Duration::from_secs(1));
    }
}
