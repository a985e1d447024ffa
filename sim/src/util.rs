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
/// The date operators type (the port then expires at the start of that day).
const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

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
        .ok()
        .or_else(|| {
            let date = time::Date::parse(value, DATE).ok()?;
            Some(PrimitiveDateTime::new(date, time::Time::MIDNIGHT))
        })?;
    parsed.format(STAMP).ok()
}

/// `len` random letters and digits, like the ids and logins a box makes up ("QcSp2e0Y").
pub(crate) fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let hex = random_hex(len);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let byte =
                u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("0"), 16).unwrap_or(0);
            ALPHABET[usize::from(byte) % ALPHABET.len()] as char
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a form's space); invalid escapes are kept as they are.
pub(crate) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(
            normalise_stamp("2026-03-01").as_deref(),
            Some("2026-03-01T00:00:00")
        );
        assert_eq!(normalise_stamp("tomorrow"), None);
        assert_eq!(now_stamp(0).len(), 19);
        assert_ne!(now_stamp(0)[..13], now_stamp(3600)[..13]);
        assert_eq!(random_hex(5).len(), 10);
        let id = random_alnum(8);
        assert_eq!(id.len(), 8);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("35%3A1"), "35:1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
