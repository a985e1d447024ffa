//! The delivery signature: `Farmhand-Signature: t=<unix seconds>,v1=<hex>` where `v1` is
//! HMAC-SHA256, keyed with the endpoint's secret (the whole `whsec_…` string as bytes),
//! over `"<t>.<body>"`. Each attempt is signed anew with its own `t`, so a receiver can
//! refuse anything whose `t` is older than its replay window (5 minutes is recommended) and
//! de-duplicate on `Farmhand-Event-Id` inside it. [`verify`] is the reference check.

use ring::hmac;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Farmhand-Signature";
/// The header carrying the event id (also in the body's `id`).
pub const EVENT_ID_HEADER: &str = "Farmhand-Event-Id";
/// The header carrying the event type (also in the body's `type`).
pub const EVENT_TYPE_HEADER: &str = "Farmhand-Event-Type";
/// The header carrying the delivery id (`dl_…`, as in the delivery log).
pub const DELIVERY_ID_HEADER: &str = "Farmhand-Delivery-Id";
/// The header carrying the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "Farmhand-Delivery-Attempt";
/// The replay window receivers are told to use, seconds.
pub const RECOMMENDED_TOLERANCE_S: i64 = 300;

/// The `Farmhand-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signed_payload(timestamp, body));
    format!("t={timestamp},v1={}", crate::ids::hex(tag.as_ref()))
}

/// Whether `header` is a valid signature of `body` made within `tolerance_s` of `now`
/// (unix seconds). Constant-time comparison of the tag.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_s: i64) -> bool {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => tags.extend(crate::ids::unhex(v)),
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return false;
    };
    // abs_diff: an attacker's `t` near i64::MIN must not overflow the subtraction.
    if now.abs_diff(t) > tolerance_s.unsigned_abs() {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let payload = signed_payload(t, body);
    tags.iter()
        .any(|tag| hmac::verify(&key, &payload, tag).is_ok())
}

fn signed_payload(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("{timestamp}.").into_bytes();
    payload.extend_from_slice(body);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_same_secret_body_and_recent_time() {
        let secret = b"whsec_test";
        let body = br#"{"id":"ev_1","type":"agent.connected"}"#;
        let header = sign(secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert!(verify(secret, &header, body, 1_700_000_100, 300));
        assert!(!verify(b"whsec_other", &header, body, 1_700_000_100, 300));
        assert!(!verify(secret, &header, b"{}", 1_700_000_100, 300));
        assert!(
            !verify(secret, &header, body, 1_700_000_301, 300),
            "replayed too late"
        );
        let forged = header.replace("t=1700000000", "t=1700000200");
        assert!(
            !verify(secret, &forged, body, 1_700_000_200, 300),
            "t is signed"
        );
        assert!(!verify(secret, "garbage", body, 1_700_000_000, 300));
    }

    #[test]
    fn incomplete_or_malformed_headers_fail() {
        let secret = b"whsec_test";
        let body = br#"{"id":"ev_1"}"#;
        let now = 1_700_000_000;
        let good = sign(secret, now, body);
        let tag = good.split_once(",v1=").unwrap().1;
        assert!(verify(secret, &good, body, now, 300), "the control case");
        assert!(
            !verify(secret, &format!("t={now}"), body, now, 300),
            "only t="
        );
        assert!(
            !verify(secret, &format!("t={now},v1="), body, now, 300),
            "empty v1"
        );
        assert!(
            !verify(secret, &format!("v1={tag}"), body, now, 300),
            "only v1"
        );
        let bad_hex = format!("t={now},v1=zz{}", &tag[2..]);
        assert!(!verify(secret, &bad_hex, body, now, 300), "v1 with bad hex");
        let odd = format!("t={now},v1={}", &tag[1..]);
        assert!(!verify(secret, &odd, body, now, 300), "v1 of odd length");
        let future = sign(secret, now + 301, body);
        assert!(
            !verify(secret, &future, body, now, 300),
            "t beyond the tolerance ahead"
        );
        let edge = sign(secret, now + 300, body);
        assert!(
            verify(secret, &edge, body, now, 300),
            "t at the tolerance ahead"
        );
        for t in [i64::MIN, i64::MAX] {
            let extreme = sign(secret, t, body);
            assert!(!verify(secret, &extreme, body, now, 300), "t = {t}");
        }
        // A forged second tag next to a valid one does not matter; a valid one among bad
        // ones (a rotating secret) does.
        let two = format!("t={now},v1={},v1={tag}", "00".repeat(32));
        assert!(verify(secret, &two, body, now, 300));
    }

    #[test]
    fn the_tag_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently (Python: hmac.new(secret, b"1700000000." + body, sha256)).
        let body = br#"{"id":"ev_1","type":"agent.connected"}"#;
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, body),
            "t=1700000000,v1=912dc098a2f9cdf9aa6f75fc66d5b67c6b7f626c9635c230ba65b2533c792bd8"
        );
    }
}
