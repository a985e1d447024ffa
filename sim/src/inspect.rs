//! The box's judge of what clients send: a `store_port` document, an IMEI or port id in a
//! query, a path the API does not have. A real box silently drops or mangles such input, so
//! the simulator records each problem as a violation (`SimHandle::violations`) for tests to
//! assert there are none. The rules are the box's, as public clients of live boxes state
//! them (spec "Second look"), written independently of the agent's own validation.

use serde_json::{Map, Value};

const TOKEN_MAX: usize = 64;
/// Every field the box's port form has (`/crud/store_port` takes the same names).
const STORE_KEYS: [&str; 18] = [
    "IMEI",
    "portID",
    "portName",
    "proxy_login",
    "proxy_password",
    "http_port",
    "socks_port",
    "PROXY_VALID_BEFORE",
    "bandlimin",
    "bandlimout",
    "bw_quota",
    "QUOTA_TYPE",
    "QUOTA_DIRECTION",
    "MAXCONN",
    "CONNLIM",
    "white_list",
    "OS",
    "IP_MODE",
];
/// The only `QUOTA_TYPE` and `QUOTA_DIRECTION` values anyone has seen a box take.
pub(crate) const QUOTA_TYPES: [&str; 1] = ["monthly"];
pub(crate) const QUOTA_DIRECTIONS: [&str; 1] = ["inout"];

fn is_token(s: &str, min: usize) -> bool {
    (min..=TOKEN_MAX).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// 14 to 16 digits: with or without the check digit, or an IMEISV.
pub(crate) fn is_imei(s: &str) -> bool {
    (14..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Problems with an IMEI a query names.
pub(crate) fn imei(what: &str, value: &str) -> Vec<String> {
    match is_imei(value) {
        true => vec![],
        false => vec![format!("{what}: IMEI {value:?} is not 14 to 16 digits")],
    }
}

/// Problems with a port id a query names.
pub(crate) fn port_id(what: &str, value: &str) -> Vec<String> {
    match is_token(value, 1) {
        true => vec![],
        false => vec![format!("{what}: port id {value:?} is not a token")],
    }
}

/// Problems with a `store_port` document.
pub(crate) fn store_port(d: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, why: &str| problems.push(format!("store_port {field}: {why}"));
    let Some(obj) = d.as_object() else {
        bad("data", "not an object");
        return problems;
    };
    for key in obj.keys().filter(|k| !STORE_KEYS.contains(&k.as_str())) {
        bad(key, "unknown key");
    }
    let text = |k: &str| d[k].as_str().unwrap_or("\u{0}");
    if !is_imei(text("IMEI")) {
        bad("IMEI", "not 14 to 16 digits");
    }
    if !is_token(text("portID"), 1) {
        bad("portID", "not a token");
    }
    if !is_token(text("portName"), 4) {
        bad(
            "portName",
            "not 4..=64 of A-Z a-z 0-9 . _ - (a box drops the port)",
        );
    }
    if !is_token(text("proxy_login"), 1) {
        bad("proxy_login", "not a 1..=64 token");
    }
    if !is_token(text("proxy_password"), 8) {
        bad("proxy_password", "not an 8..=64 token");
    }
    let port = |k: &str| d[k].as_u64().filter(|p| (1024..=65535).contains(p));
    match (port("http_port"), port("socks_port")) {
        (Some(a), Some(b)) if a != b => {}
        _ => bad("ports", "not two distinct numbers in 1024..=65535"),
    }
    if obj.contains_key("PROXY_VALID_BEFORE") && !is_expiry(text("PROXY_VALID_BEFORE")) {
        bad(
            "PROXY_VALID_BEFORE",
            "not YYYY-MM-DDTHH:MM[:SS], YYYY-MM-DD or \"\"",
        );
    }
    for k in ["bandlimin", "bandlimout", "bw_quota"] {
        if obj.contains_key(k) && d[k].as_u64().is_none_or(|v| v == 0) {
            bad(k, "present but not a positive integer");
        }
    }
    quota_kind(obj, &mut bad);
    problems
}

/// A quota goes with its kind, and only with a quota, as values a box was seen to take.
fn quota_kind(obj: &Map<String, Value>, bad: &mut impl FnMut(&str, &str)) {
    let quota = obj.contains_key("bw_quota");
    for (k, seen) in [
        ("QUOTA_TYPE", &QUOTA_TYPES[..]),
        ("QUOTA_DIRECTION", &QUOTA_DIRECTIONS[..]),
    ] {
        match (quota, obj.get(k).and_then(Value::as_str)) {
            (true, Some(v)) if seen.contains(&v) => {}
            (false, None) => {}
            _ => bad(
                k,
                "must come with bw_quota, as a value a box was seen to take",
            ),
        }
    }
}

/// "", `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS`, from 2020 on.
fn is_expiry(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let shape = |at: &[(usize, u8)], len: usize| {
        s.len() == len
            && s.bytes()
                .enumerate()
                .all(|(i, b)| match at.iter().find(|(p, _)| *p == i) {
                    Some((_, sep)) => b == *sep,
                    None => b.is_ascii_digit(),
                })
    };
    let date = [(4, b'-'), (7, b'-')];
    let minutes = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':')];
    let seconds = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    (shape(&date, 10) || shape(&minutes, 16) || shape(&seconds, 19)) && s[..4] >= *"2020"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"IMEI": "350000000000018", "portID": "portabc", "portName": "farmhand-al1",
               "proxy_login": "u1", "proxy_password": "password1", "http_port": 8001,
               "socks_port": 5001, "PROXY_VALID_BEFORE": "2030-01-01T10:00"})
    }

    #[test]
    fn a_good_document_has_no_problems() {
        assert_eq!(store_port(&good()), Vec::<String>::new());
        let mut with_quota = good();
        with_quota["bw_quota"] = json!(500);
        with_quota["QUOTA_TYPE"] = json!("monthly");
        with_quota["QUOTA_DIRECTION"] = json!("inout");
        assert_eq!(store_port(&with_quota), Vec::<String>::new());
        for expiry in ["", "2030-01-01", "2030-01-01T10:00:05"] {
            let mut d = good();
            d["PROXY_VALID_BEFORE"] = json!(expiry);
            assert_eq!(store_port(&d), Vec::<String>::new(), "{expiry}");
        }
    }

    #[test]
    fn each_rule_bites() {
        let cases = [
            ("IMEI", json!("1-4.3.1.1")),
            ("portName", json!("a@b")),
            ("portName", json!("abc")),
            ("proxy_password", json!("short")),
            ("http_port", json!(5001)),
            ("PROXY_VALID_BEFORE", json!("tomorrow")),
            ("bw_quota", json!(0)),
            ("surprise", json!(1)),
        ];
        for (field, value) in cases {
            let mut d = good();
            d[field] = value;
            assert!(!store_port(&d).is_empty(), "{field}");
        }
        let mut lifetime = good();
        lifetime["bw_quota"] = json!(5);
        lifetime["QUOTA_TYPE"] = json!("lifetime");
        lifetime["QUOTA_DIRECTION"] = json!("inout");
        assert_eq!(store_port(&lifetime).len(), 1);
        assert!(imei("q", "35000000000001").is_empty());
        assert!(imei("q", "3500000000000180").is_empty());
        assert!(!imei("q", "1-4.3.1.1").is_empty());
        assert!(!port_id("q", "a b").is_empty());
    }
}
