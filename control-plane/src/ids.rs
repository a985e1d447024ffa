//! Random identifiers and timestamps shared by every module: ids from the system CSPRNG
//! (ring), times as `OffsetDateTime` in UTC and RFC 3339 on the wire.

use ring::rand::{SecureRandom, SystemRandom};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `n` random bytes from the system CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom reads the OS generator; it fails only if the OS has none, in which
    // case nothing in this process could be secure: refuse loudly rather than continue.
    if SystemRandom::new().fill(&mut out).is_err() {
        panic!("the operating system's random generator is unavailable");
    }
    out
}

/// A prefixed random id, e.g. `ag_3f9a…` (16 random bytes in lowercase hex).
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex(&random_bytes::<16>()))
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The bytes of lowercase or uppercase hex (`None` for odd length or a non-hex digit).
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The current time in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Unix milliseconds of `t` (0 before 1970, which cannot happen for real clocks).
pub fn unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// RFC 3339 text of `t`, e.g. `2026-01-02T03:04:05.123Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = random_id("ag");
        assert!(a.starts_with("ag_") && a.len() == 35, "{a}");
        assert_ne!(a, random_id("ag"));
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(unix_ms(t), 1_700_000_000_000);
    }
}
