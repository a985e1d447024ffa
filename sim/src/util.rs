//! Small helpers: box-local timestamps in ProxySmart's zone-less format, random tokens and
//! HTTP Basic credentials.

use ring::rand::{SecureRandom, SystemRandom};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// "2026-02-10T14:14:26": ProxySmart's timestamp format (no zone).
pub(crate) const STAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
/// The minute-precision form an HTML `datetime-local` input sends.
const STAMP_MINUTES: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]");

/// Now, as a box `utc_offset_s` seconds east of UTC prints it (local time, no zone).
pub(crate) fn now_stamp(utc_offset_s: i32) -> String {
    let now = OffsetDateTime::now_utc() + time::Duration::seconds(i64::from(utc_offset_s));
    PrimitiveDateTime::new(now.date(), now.time())
        .format(STAMP)
        .unwrap_or_default()
}

/// Normalises an expiry to `STAMP`; `None` when it is neither "" nor a timestamp.
pub(crate) fn normalise_stamp(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some(String::new());
    }
    let parsed = PrimitiveDateTime::parse(value, STAMP)
        .or_else(|_| PrimitiveDateTime::parse(value, STAMP_MINUTES))
        .ok()?;
    parsed.format(STAMP).ok()
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if SystemRandom::new().fill(&mut buf).is_err() {
        // The OS RNG failing is not something a simulator can recover from meaningfully;
        // fall back to the clock so ids stay distinct.
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (nanos >> ((i % 16) * 8)) as u8);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `user:password` bytes of an HTTP `Basic` credential header value, if it is one.
pub(crate) fn basic_credentials(value: &str) -> Option<Vec<u8>> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_normalise() {
        assert_eq!(normalise_stamp("").as_deref(), Some(""));
        assert_eq!(
            normalise_stamp("2026-03-01T10:00:05").as_deref(),
            Some("2026-03-01T10:00:05")
        );
        assert_eq!(
            normalise_stamp("2026-03-01T10:00").as_deref(),
            Some("2026-03-01T10:00:00")
        );
        assert_eq!(normalise_stamp("tomorrow"), None);
        assert_eq!(now_stamp(0).len(), 19);
        assert_ne!(now_stamp(0)[..13], now_stamp(3600)[..13]);
        assert_eq!(random_hex(5).len(), 10);
    }
}
