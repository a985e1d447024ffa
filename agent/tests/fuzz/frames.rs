//! The fuzz tests' frame generators: a deterministic xorshift [`Rng`], valid plane frames
//! and commands, and the structured and textual mutations (wrong types, extremes, deep
//! nesting, unknown fields, hostile strings, cut text) applied to them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_agent::base::clock::now_ms;
use farmhand_protocol::{
    Challenge, HealthLimits, Heartbeat, PlaneMessage, ProtocolError, ProtocolErrorCode, Welcome,
    NONCE_LEN,
};
use serde_json::{json, Value};

/// The buyer's password in every generated provision (the audit must never hold it).
pub const BUYER_PASSWORD: &str = "Fuzz-Buyer-Pass-0001";

/// xorshift64: tiny, deterministic, good enough to pick mutations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// The box's modems as the frames name them.
pub struct Imeis {
    pub online: String,
    pub offline: String,
    /// Online, and excluded by the seller's policy.
    pub excluded: String,
}

pub fn nested(depth: usize, array: bool) -> Value {
    (0..depth).fold(json!(1), |inner, _| match array {
        true => json!([inner]),
        false => json!({ "a": inner }),
    })
}

/// A value of the wrong type, an extreme number, or (half the time) a hostile string.
pub fn weird(rng: &mut Rng, imeis: &Imeis) -> Value {
    if rng.below(2) == 0 {
        return json!(hostile_string(rng, imeis));
    }
    let now = now_ms();
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(1e308),
        5 => json!(u64::MAX),
        6 => serde_json::from_str("18446744073709551616").unwrap(),
        7 => json!(i64::MIN),
        8 => json!(3.5),
        9 => json!([]),
        10 => json!({}),
        11 => json!({"$gt": ""}),
        12 => nested(1 + rng.below(300), rng.below(2) == 0),
        13 => json!(now.saturating_sub(1)),
        14 => json!(now + 20 * 366 * 86_400_000),
        _ => json!(8),
    }
}

/// Strings that are wrong somewhere: charset, length, control characters, injection.
pub fn hostile_string(rng: &mut Rng, imeis: &Imeis) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => "a".repeat(10_000),
        2 => "a".repeat(65),
        3 => "short".into(),
        4 => "nul\u{0}byte".into(),
        5 => format!("{}\n", imeis.online),
        6 => "../../etc/passwd".into(),
        7 => format!("a&arg=evil&IMEI={}", imeis.excluded),
        8 => "\u{1b}[31mred ümlaut".into(),
        9 => "has space".into(),
        10 => imeis.excluded.clone(),
        _ => "{\"json\":\"inside\"}".into(),
    }
}

pub fn valid_command(rng: &mut Rng, id: usize, imeis: &Imeis) -> Value {
    let now = now_ms();
    // Enough allocations that many provisions are new ones (a known one returns early).
    let allocation = format!("al-{}", rng.below(400));
    let imei = rng.pick(&[
        imeis.online.as_str(),
        imeis.online.as_str(),
        imeis.online.as_str(),
        imeis.offline.as_str(),
        imeis.excluded.as_str(),
        "356999999999999",
    ]);
    let body = match rng.below(5) {
        0 => json!({"op": "provision", "allocation_id": allocation, "imei": imei,
            "login": "buyer", "password": BUYER_PASSWORD, "expires_at_ms": now + 86_400_000,
            "bandwidth_kbit": 1000, "traffic_quota_mb": 500}),
        1 => json!({"op": "release", "allocation_id": allocation}),
        2 => json!({"op": "rotate_ip", "imei": imei}),
        3 => {
            json!({"op": "update_port", "allocation_id": allocation, "expires_at_ms": now + 172_800_000})
        }
        _ => json!({"op": "reconcile", "ports": [{"allocation_id": allocation, "imei": imei}]}),
    };
    json!({"type": "command", "id": format!("c{id}"), "deadline_ms": now + 60_000, "body": body})
}

/// A random path to a field of `v` (objects and arrays), possibly empty.
pub fn random_path(rng: &mut Rng, v: &Value) -> Vec<String> {
    let mut path = Vec::new();
    let mut at = v;
    while rng.below(3) != 0 {
        let keys: Vec<String> = match at {
            Value::Object(m) => m.keys().cloned().collect(),
            Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
            _ => break,
        };
        if keys.is_empty() {
            break;
        }
        let key = rng.pick(&keys);
        at = match at {
            Value::Object(m) => &m[&key],
            _ => &at[key.parse::<usize>().unwrap()],
        };
        path.push(key);
    }
    path
}

pub fn at_path<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |at, key| match at {
        Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
        other => &mut other[key.as_str()],
    })
}

/// Half the time one field of the body (where validation matters), else anywhere.
pub fn target_path(rng: &mut Rng, frame: &Value) -> Vec<String> {
    let body_keys: Vec<String> = match frame.get("body") {
        Some(Value::Object(m)) => m.keys().filter(|k| *k != "op").cloned().collect(),
        _ => Vec::new(),
    };
    if rng.below(2) == 0 && !body_keys.is_empty() {
        return vec!["body".into(), rng.pick(&body_keys)];
    }
    random_path(rng, frame)
}

pub fn mutate(rng: &mut Rng, frame: &mut Value, imeis: &Imeis) {
    let path = target_path(rng, frame);
    // The object holding the target (the frame itself for an empty path).
    let (parent_path, key) = match path.split_last() {
        Some((key, parent)) => (parent.to_vec(), Some(key.clone())),
        None => (Vec::new(), None),
    };
    match rng.below(8) {
        0..=3 => *at_path(frame, &path) = weird(rng, imeis),
        4 => {
            if let (Value::Object(m), Some(key)) = (at_path(frame, &parent_path), key) {
                m.remove(&key);
            }
        }
        5 => {
            let extra = rng.pick(&["extra", "url", "path", "method"]);
            if let Value::Object(m) = at_path(frame, &parent_path) {
                m.insert(extra.into(), weird(rng, imeis));
            }
        }
        6 => {
            let op = rng.pick(&["call_url", "exec", "", "PROVISION", "provision "]);
            if let Some(body) = frame.get_mut("body").and_then(Value::as_object_mut) {
                body.insert("op".into(), json!(op));
            }
        }
        _ => {
            let kind = rng.pick(&[
                "commands",
                "heartbeat",
                "welcome",
                "error",
                "challenge",
                "command",
            ]);
            if let Some(top) = frame.as_object_mut() {
                top.insert("type".into(), json!(kind));
            }
        }
    }
}

/// A valid frame of any kind the plane sends (mostly commands).
pub fn valid_frame(rng: &mut Rng, id: usize, imeis: &Imeis) -> Value {
    let now = now_ms();
    let message = match rng.below(8) {
        0 => PlaneMessage::Challenge(Challenge {
            version: 1,
            nonce: STANDARD.encode([7u8; NONCE_LEN]),
        }),
        1 => PlaneMessage::Welcome(Welcome {
            session_id: "s-fuzz".into(),
            heartbeat_interval_s: 15,
            server_time_ms: now,
            health_limits: Some(HealthLimits::DEFAULT),
        }),
        2 => PlaneMessage::Error(ProtocolError {
            code: ProtocolErrorCode::RetryLater,
            message: "busy".into(),
            supported: None,
            retry_after_s: Some(30),
        }),
        3 => PlaneMessage::Heartbeat(Heartbeat { time_ms: now }),
        _ => return valid_command(rng, id, imeis),
    };
    serde_json::to_value(message).unwrap()
}

/// One frame's text: valid, mutated, or mangled text.
pub fn frame(rng: &mut Rng, mut value: Value, imeis: &Imeis) -> String {
    let mutations = rng.pick(&[0, 1, 1, 1, 2, 3]);
    for _ in 0..mutations {
        mutate(rng, &mut value, imeis);
    }
    let text = value.to_string();
    match rng.below(10) {
        0 => String::from_utf8_lossy(&text.as_bytes()[..rng.below(text.len())]).into_owned(),
        1 => format!("{}{}", "[".repeat(rng.below(5000)), text),
        _ => text,
    }
}

/// One textual mutation: a number or a string value swapped for an extreme one, a byte
/// changed, a field added, or the text cut short. Works on bytes: the result may be
/// invalid UTF-8 only where a cut split a character (made lossy, as a socket would not).
pub fn mutate_text(rng: &mut Rng, text: &str) -> String {
    let bytes = text.as_bytes();
    let at = rng.below(bytes.len().max(1));
    let find = |from: usize, pred: &dyn Fn(&[u8]) -> bool| {
        (from..bytes.len()).find(|&i| pred(&bytes[i..]))
    };
    let splice = |start: usize, end: usize, with: &str| {
        let mut out = bytes[..start].to_vec();
        out.extend_from_slice(with.as_bytes());
        out.extend_from_slice(&bytes[end..]);
        String::from_utf8_lossy(&out).into_owned()
    };
    match rng.below(6) {
        0 | 1 => {
            let Some(start) = find(at, &|b| b[0].is_ascii_digit()) else {
                return text.to_owned();
            };
            let end = find(start, &|b| !b[0].is_ascii_digit()).unwrap_or(bytes.len());
            let extreme = rng.pick(&[
                "0",
                "-1",
                "1",
                "18446744073709551615",
                "18446744073709551616",
                "1e308",
                "-0",
                "3.5",
                "9223372036854775808",
                "4294967296",
                "65536",
                "\"7\"",
                "null",
            ]);
            splice(start, end, extreme)
        }
        2 => {
            let Some(open) = find(at, &|b| b.starts_with(b":\"")).map(|i| i + 2) else {
                return text.to_owned();
            };
            let close = find(open, &|b| b[0] == b'"').unwrap_or(bytes.len());
            let hostile = rng.pick(&[
                "",
                "a\\u0000b",
                "350000000000018\\n",
                "../x",
                "\\u001b[31m",
                "ü",
                " ",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ]);
            splice(open, close, hostile)
        }
        3 => {
            let byte = [b" {}[]\":,0aZ\\\x7f"[rng.below(13)]];
            splice(
                at,
                (at + 1).min(bytes.len()),
                &String::from_utf8_lossy(&byte),
            )
        }
        4 => text.replacen('{', "{\"extra\":1,", 1),
        _ => splice(at, bytes.len(), ""),
    }
}
