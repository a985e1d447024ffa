//! The retry schedule of a delivery: after the n-th failed attempt, wait
//! `min(retry_initial_s · 2^(n-1), retry_max_s)`, randomised to 50–100 % of that (so
//! endpoints recovering together are not hit by every retry at once), and give up once
//! `max_age_s` have passed since the event. The last attempt is made at that deadline.

use crate::config::WebhooksConfig;
use farmhand_ops::backoff;
use std::time::Duration;
use time::OffsetDateTime;

/// When to try again, or when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RetryPolicy {
    initial: Duration,
    max: Duration,
    max_age: Duration,
}

impl RetryPolicy {
    /// The policy of `[webhooks]`.
    pub(super) fn new(config: &WebhooksConfig) -> Self {
        RetryPolicy {
            initial: Duration::from_secs(config.retry_initial_s),
            max: Duration::from_secs(config.retry_max_s),
            max_age: Duration::from_secs(config.max_age_s),
        }
    }

    /// The delay before attempt `failed + 1`, before jitter.
    fn base_delay(&self, failed: u32) -> Duration {
        backoff::doubling(self.initial, self.max, failed.saturating_sub(1))
    }

    /// When to attempt again after `failed` failed attempts of an event created at
    /// `created_at`; `None` once its `max_age` has passed (the delivery has failed).
    /// `unit` is a random number in [0, 1] (the jitter).
    pub(super) fn next_attempt(
        &self,
        created_at: OffsetDateTime,
        failed: u32,
        now: OffsetDateTime,
        unit: f64,
    ) -> Option<OffsetDateTime> {
        let deadline = created_at.saturating_add(self.max_age.try_into().ok()?);
        if now >= deadline {
            return None;
        }
        let base = self.base_delay(failed);
        let delay = backoff::equal_jitter(base, unit);
        let at = now.saturating_add(delay.try_into().ok()?);
        Some(at.min(deadline))
    }
}

pub(super) use backoff::random_unit;

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&WebhooksConfig::default())
    }

    #[test]
    fn delays_double_from_the_initial_value_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=12).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(
            secs,
            vec![5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(p.base_delay(u32::MAX).as_secs(), 3600, "no overflow");
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let p = policy();
        let t0 = crate::ids::now();
        let low = p.next_attempt(t0, 3, t0, 0.0).unwrap();
        let high = p.next_attempt(t0, 3, t0, 1.0).unwrap();
        assert_eq!((low - t0).whole_seconds(), 10);
        assert_eq!((high - t0).whole_seconds(), 20);
    }

    #[test]
    fn retries_stop_at_max_age_with_a_last_attempt_at_the_deadline() {
        let p = policy();
        let t0 = crate::ids::now();
        let day = time::Duration::hours(24);
        let late = t0 + day - time::Duration::seconds(60);
        assert_eq!(p.next_attempt(t0, 20, late, 1.0), Some(t0 + day));
        assert_eq!(p.next_attempt(t0, 21, t0 + day, 1.0), None);
        // Attempts over 24 h with the defaults: about 30, not thousands.
        let (mut now, mut attempts) = (t0, 1);
        while let Some(next) = p.next_attempt(t0, attempts, now, 1.0) {
            now = next;
            attempts += 1;
        }
        assert!((25..=35).contains(&attempts), "{attempts}");
    }
}
