//! Retry pacing both binaries share: a delay that doubles from `initial` up to `max`, and
//! the two jitters in use — *full* (uniform in `[0, delay]`, for a fleet's reconnects after
//! a plane restart) and *equal* (50–100 % of the delay, for retries that must still wait
//! about as long as asked: webhook deliveries, refused releases). Randomness comes from
//! the system CSPRNG through [`random_unit`]; the pure functions take it as an argument so
//! tests can pin it.

use std::time::Duration;

/// `initial · 2^doublings`, at most `max` (no overflow for any `doublings`).
pub fn doubling(initial: Duration, max: Duration, doublings: u32) -> Duration {
    let factor = 1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// Full jitter: `delay · unit` (`unit` in [0, 1]).
pub fn full_jitter(delay: Duration, unit: f64) -> Duration {
    delay.mul_f64(unit.clamp(0.0, 1.0))
}

/// Equal jitter: 50–100 % of `delay` (`unit` in [0, 1]).
pub fn equal_jitter(delay: Duration, unit: f64) -> Duration {
    delay.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// A random number in [0, 1] from the system CSPRNG (falls back to the clock if it is
/// unavailable: jitter must never stop a retry).
pub fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let raw = if ring::rand::SystemRandom::new().fill(&mut bytes).is_ok() {
        u32::from_be_bytes(bytes)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    };
    f64::from(raw) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_max_without_overflow() {
        let (one, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let seen: Vec<u64> = (0..8).map(|n| doubling(one, max, n).as_secs()).collect();
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(doubling(one, max, u32::MAX), max);
    }

    #[test]
    fn jitters_stay_in_their_ranges() {
        let d = Duration::from_secs(10);
        assert_eq!(full_jitter(d, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(d, 1.0), d);
        assert_eq!(equal_jitter(d, 0.0), Duration::from_secs(5));
        assert_eq!(equal_jitter(d, 1.0), d);
        assert_eq!(equal_jitter(d, 7.0), d, "a unit out of range is clamped");
        let samples: Vec<f64> = (0..50).map(|_| random_unit()).collect();
        assert!(samples.iter().all(|u| (0.0..=1.0).contains(u)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]), "not random");
    }
}
