//! The certificate's `notAfter`, read straight from its DER, for the log lines of a load or
//! a reload (operators renewing every 60–90 days want to see the new expiry) and the warning
//! about an expired certificate.
//!
//! A full X.509 parser is a heavy dependency for one date, and rustls does not expose the
//! validity, so this walks the few DER elements in front of it: `Certificate` →
//! `tbsCertificate` → [version] → serialNumber → signature → issuer → `validity`. Anything
//! unexpected yields `None` (the date is then simply not logged); nothing here can panic on
//! a malformed file, and rustls has already refused a certificate it cannot parse.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`, absent in v1 certificates.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// When the certificate in `der` stops being valid, if its DER can be read that far.
pub fn not_after(der: &[u8]) -> Option<OffsetDateTime> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let (tag, _, after_version) = element(tbs)?;
    let fields = if tag == VERSION { after_version } else { tbs };
    let (_serial, rest) = expect(fields, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (_, _not_before, rest) = element(validity)?;
    let (tag, value, _) = element(rest)?;
    parse_time(tag, value)
}

/// The content of an element with `tag`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (found, content, rest) if found == tag => Some((content, rest)),
        _ => None,
    }
}

/// One DER element: its tag, its content and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits say how many length bytes follow (4 is plenty here).
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = rest.get(..count)?;
        let length = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (length, rest.get(count..)?)
    };
    Some((tag, rest.get(..length)?, rest.get(length..)?))
}

/// `YYMMDDHHMMSSZ` (UTCTime, years 1950–2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime), the
/// only forms RFC 5280 allows in a certificate.
fn parse_time(tag: u8, value: &[u8]) -> Option<OffsetDateTime> {
    let digits = value.strip_suffix(b"Z")?;
    let (year, rest) = match tag {
        UTC_TIME if digits.len() == 12 => {
            let yy = number(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => (number(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| number(rest.get(i..i + 2)?);
    let month = Month::try_from(u8::try_from(field(0)?).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, field(2)? as u8).ok()?;
    let time = Time::from_hms(field(4)? as u8, field(6)? as u8, field(8)? as u8).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// ASCII decimal digits as a number; `None` for anything else.
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn cert_expiring(at: OffsetDateTime) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = at;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_time_and_generalized_time() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050, like RFC 5280 says.
        for at in [
            time::macros::datetime!(2031-02-28 13:45:07 UTC),
            time::macros::datetime!(2049-12-31 23:59:59 UTC),
            time::macros::datetime!(2051-06-01 00:00:01 UTC),
        ] {
            assert_eq!(not_after(&cert_expiring(at)), Some(at));
        }
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        let der = cert_expiring(time::macros::datetime!(2031-02-28 13:45:07 UTC));
        // A truncated certificate no longer holds the length its outer SEQUENCE announces.
        for cut in 0..der.len() {
            assert_eq!(not_after(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse_time(UTC_TIME, b"311399000000Z"), None, "month 13");
        assert_eq!(parse_time(UTC_TIME, b"31022813450Z"), None, "too short");
        assert_eq!(parse_time(UTC_TIME, b"3102281345aaZ"), None);
    }
}
