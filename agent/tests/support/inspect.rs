//! The fake ProxySmart's judge: what a valid `store_port` body, IMEI and port id look like.
//! Written independently of the agent's `validate` (on purpose: the same rules, restated),
//! so a rule the agent forgets shows up here as a violation.

use serde_json::Value;

const TOKEN_MAX: usize = 64;
const STORE_KEYS: [&str; 13] = [
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
];

fn is_token(s: &str, min: usize) -> bool {
    (min..=TOKEN_MAX).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn is_imei(s: &str) -> bool {
    s.len() == 15 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Problems with a query's IMEI.
pub fn imei(what: &str, value: &str) -> Vec<String> {
    match is_imei(value) {
        true => vec![],
        false => vec![format!("{what}: IMEI {value:?} is not 15 digits")],
    }
}

/// Problems with a query's port id.
pub fn port_id(what: &str, value: &str) -> Vec<String> {
    match is_token(value, 1) {
        true => vec![],
        false => vec![format!("{what}: port id {value:?} is not a token")],
    }
}

/// Problems with a `store_port` body.
pub fn store_port(d: &Value) -> Vec<String> {
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
        bad("IMEI", "not 15 digits");
    }
    if !is_token(text("portID"), 1) {
        bad("portID", "not a token");
    }
    match text("portName").strip_prefix("farmhand-") {
        Some(allocation) if is_token(allocation, 1) => {}
        _ => bad("portName", "not farmhand-<allocation id>"),
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
    if !is_box_time(text("PROXY_VALID_BEFORE")) {
        bad("PROXY_VALID_BEFORE", "not YYYY-MM-DDTHH:MM:SS");
    }
    for k in ["bandlimin", "bandlimout", "bw_quota"] {
        if obj.contains_key(k) && d[k].as_u64().is_none_or(|v| v == 0) {
            bad(k, "present but not a positive integer");
        }
    }
    // A quota goes with its kind, and only with a quota.
    let quota = obj.contains_key("bw_quota");
    for (k, want) in [("QUOTA_TYPE", "lifetime"), ("QUOTA_DIRECTION", "in+out")] {
        match (quota, obj.get(k)) {
            (true, Some(v)) if *v == want => {}
            (false, None) => {}
            _ => bad(k, "must come with bw_quota, as the documented value"),
        }
    }
    problems
}

fn is_box_time(s: &str) -> bool {
    let digits_at = [0..4, 5..7, 8..10, 11..13, 14..16, 17..19];
    s.len() == 19
        && s.is_ascii()
        && digits_at
            .iter()
            .all(|r| s[r.clone()].bytes().all(|b| b.is_ascii_digit()))
        && &s[4..5] == "-"
        && &s[7..8] == "-"
        && &s[10..11] == "T"
        && &s[13..14] == ":"
        && &s[16..17] == ":"
        && s[..4] >= *"2020"
}
