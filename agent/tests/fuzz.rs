//! Fuzz-style tests of what the plane sends the agent: random and mutated frames (wrong
//! types, huge numbers, deep nesting, unknown ops, types and fields, hostile strings,
//! truncated JSON), decoded as the session decodes them.
//!
//! - A million frames of every kind go through the decoder and everything the agent does
//!   with a decoded frame before ProxySmart: the challenge check, the welcome's heartbeat,
//!   clock and health limits, `retry_after_s`, the command gate. Nothing panics, every
//!   duration and size lands in its clamp, and a command the gate passes has only fields
//!   a box accepts.
//! - Thousands of command frames are executed against the ProxySmart simulator: every
//!   command gets exactly one result, ProxySmart never receives an invalid field, an
//!   unknown path or an excluded IMEI, and the audit never holds a password.
//!
//! Deterministic (xorshift, fixed seeds): a failure names a case that can be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_agent::base::backoff::{Backoff, MAX_RETRY_AFTER};
use farmhand_agent::base::clock::now_ms;
use farmhand_agent::boxside::commands::validate;
use farmhand_agent::boxside::commands::Executor;
use farmhand_agent::boxside::health::{warnings, Probe};
use farmhand_agent::boxside::ports::port_name;
use farmhand_agent::config::policy::Policy;
use farmhand_agent::local::audit::read_recent;
use farmhand_agent::plane::session::heartbeat_interval;
use farmhand_protocol::handshake::{ClientHandshake, Step};
use farmhand_protocol::{
    decode, is_imei, Challenge, CommandBody, CommandResult, HealthLimits, Heartbeat, Outcome,
    PlaneMessage, ProtocolError, ProtocolErrorCode, Welcome, DEFAULT_MAX_FRAME_BYTES, NONCE_LEN,
    SUPPORTED_VERSIONS,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use support::executor::Setup;
use support::TestBox;
use tokio::sync::mpsc;

const FRAMES: usize = 4000;
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const BUYER_PASSWORD: &str = "Fuzz-Buyer-Pass-0001";

/// xorshift64: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// The box's modems as the frames name them.
struct Imeis {
    online: String,
    offline: String,
    /// Online, and excluded by the seller's policy.
    excluded: String,
}

fn nested(depth: usize, array: bool) -> Value {
    (0..depth).fold(json!(1), |inner, _| match array {
        true => json!([inner]),
        false => json!({ "a": inner }),
    })
}

/// A value of the wrong type, an extreme number, or (half the time) a hostile string.
fn weird(rng: &mut Rng, imeis: &Imeis) -> Value {
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
fn hostile_string(rng: &mut Rng, imeis: &Imeis) -> String {
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

fn valid_command(rng: &mut Rng, id: usize, imeis: &Imeis) -> Value {
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
fn random_path(rng: &mut Rng, v: &Value) -> Vec<String> {
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

fn at_path<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |at, key| match at {
        Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
        other => &mut other[key.as_str()],
    })
}

/// Half the time one field of the body (where validation matters), else anywhere.
fn target_path(rng: &mut Rng, frame: &Value) -> Vec<String> {
    let body_keys: Vec<String> = match frame.get("body") {
        Some(Value::Object(m)) => m.keys().filter(|k| *k != "op").cloned().collect(),
        _ => Vec::new(),
    };
    if rng.below(2) == 0 && !body_keys.is_empty() {
        return vec!["body".into(), rng.pick(&body_keys)];
    }
    random_path(rng, frame)
}

fn mutate(rng: &mut Rng, frame: &mut Value, imeis: &Imeis) {
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
fn valid_frame(rng: &mut Rng, id: usize, imeis: &Imeis) -> Value {
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
fn frame(rng: &mut Rng, mut value: Value, imeis: &Imeis) -> String {
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

async fn executor(sim: &TestBox, excluded: &str, dir: &std::path::Path) -> Executor {
    let policy = Policy {
        excluded_imeis: [excluded.to_string()].into(),
        // After its first rotation a modem is refused quickly, which keeps the run short.
        min_rotation_interval: Duration::from_secs(3600),
        ..Policy::default()
    };
    Setup::default()
        .rotation_timeout(Duration::from_secs(2))
        .policy(policy)
        .audited()
        .executor(&sim.url(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_never_panic_and_never_reach_proxysmart_unchecked() {
    let sim = TestBox::start().await;
    let imeis = Imeis {
        online: sim.online.clone(),
        offline: sim.offline.clone(),
        excluded: sim.plug_in_third(),
    };
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&sim, &imeis.excluded, dir.path()).await;
    let (tx, mut rx) = mpsc::channel::<CommandResult>(FRAMES + 1);
    let mut rng = Rng(SEED);
    let mut submitted: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..FRAMES {
        let command = valid_command(&mut rng, i, &imeis);
        let text = frame(&mut rng, command, &imeis);
        if let Ok(PlaneMessage::Command(command)) =
            decode::<PlaneMessage>(&text, DEFAULT_MAX_FRAME_BYTES)
        {
            *submitted.entry(command.id.clone()).or_default() += 1;
            exec.submit(command, tx.clone());
        }
    }
    drop(tx);
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(result) = rx.recv().await {
            *answered.entry(result.id.clone()).or_default() += 1;
            let code = match &result.outcome {
                Outcome::Ok { .. } => "ok".to_string(),
                Outcome::Error { error } => error.code.as_str().to_string(),
            };
            *codes.entry(code).or_default() += 1;
        }
    })
    .await;
    assert!(all.is_ok(), "every command finished");
    assert_eq!(answered, submitted, "exactly one result per delivery");
    let total: usize = submitted.values().sum();
    assert!(
        total > FRAMES / 8,
        "only {total} of {FRAMES} frames decoded"
    );
    for code in ["ok", "invalid_command", "policy_denied", "unknown_imei"] {
        assert!(codes.contains_key(code), "no {code} among {codes:?}");
    }
    sim.assert_no_violations();
    let (stored, reset) = (sim.stored_imeis(), sim.reset_imeis());
    assert!(
        !stored.iter().chain(&reset).any(|i| *i == imeis.excluded),
        "excluded IMEI touched"
    );
    assert!(
        sim.api_calls("/crud/store_port") > 20,
        "the happy path was exercised"
    );
    let audit = read_recent(dir.path(), 0).unwrap();
    assert_eq!(audit.skipped, 0);
    assert!(
        audit.entries.len() >= submitted.len() / 2,
        "{}",
        audit.entries.len()
    );
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains(BUYER_PASSWORD),
        "a password reached the audit"
    );
}

const MILLION: usize = 1_000_000;
const POOL: usize = 20_000;

/// One textual mutation: a number or a string value swapped for an extreme one, a byte
/// changed, a field added, or the text cut short. Works on bytes: the result may be
/// invalid UTF-8 only where a cut split a character (made lossy, as a socket would not).
fn mutate_text(rng: &mut Rng, text: &str) -> String {
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

/// What a command the gate passed may contain: only what a box accepts.
fn assert_box_safe(body: &CommandBody, now: u64) {
    let token = |v: &str| {
        (1..=64).contains(&v.len())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let allocation = |id: &str| token(id) && port_name(id).len() <= 64;
    let ok = match body {
        CommandBody::Provision(p) => {
            allocation(&p.allocation_id)
                && is_imei(&p.imei)
                && token(&p.login)
                && token(p.password.expose())
                && p.expires_at_ms > now
                && p.expires_at_ms - now <= validate::MAX_EXPIRY_AHEAD_MS
                && [p.bandwidth_kbit, p.traffic_quota_mb, p.rotate_every_s]
                    .iter()
                    .flatten()
                    .all(|v| (1..=validate::MAX_TRAFFIC_QUOTA_MB).contains(v))
        }
        CommandBody::Release(r) => allocation(&r.allocation_id),
        CommandBody::RotateIp(r) => is_imei(&r.imei),
        CommandBody::UpdatePort(u) => {
            allocation(&u.allocation_id)
                && u.expires_at_ms > now
                && u.expires_at_ms - now <= validate::MAX_EXPIRY_AHEAD_MS
        }
        CommandBody::Reconcile(r) => r
            .ports
            .iter()
            .all(|d| allocation(&d.allocation_id) && is_imei(&d.imei)),
    };
    assert!(ok, "the gate passed {body:?}");
}

#[test]
fn a_million_plane_frames_never_panic_and_every_value_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Setup::default()
        .rotation_timeout(Duration::from_secs(1))
        .context("http://127.0.0.1:9", dir.path());
    let health = Probe::new(dir.path().into(), dir.path().into()).measure();
    let mut backoff = Backoff::new(farmhand_agent::base::backoff::RECONNECT);
    let imeis = Imeis {
        online: "350000000000018".into(),
        offline: "350000000000026".into(),
        excluded: "350000000000034".into(),
    };
    let mut rng = Rng(SEED ^ 0xA5A5_A5A5);
    // Structured mutations are costly (deep JSON trees): a pool of them, each then mutated
    // again as text per case, keeps a million cases to seconds.
    let pool: Vec<String> = (0..POOL)
        .map(|i| {
            let valid = valid_frame(&mut rng, i, &imeis);
            frame(&mut rng, valid, &imeis)
        })
        .collect();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for case in 0..MILLION {
        let mut text = rng.pick(&pool);
        for _ in 0..rng.below(3) {
            text = mutate_text(&mut rng, &text);
        }
        let Ok(message) = decode::<PlaneMessage>(&text, DEFAULT_MAX_FRAME_BYTES) else {
            *kinds.entry("refused").or_default() += 1;
            continue;
        };
        let kind = match message {
            PlaneMessage::Challenge(c) => {
                let (mut handshake, _) = ClientHandshake::start("ag_fuzz", "0", SUPPORTED_VERSIONS);
                let mut signed = 0;
                let step = handshake.receive(PlaneMessage::Challenge(c), |transcript| {
                    // The nonce is the transcript's tail: only a well-formed one is signed.
                    assert!(transcript.len() > NONCE_LEN, "case {case}");
                    signed += 1;
                    vec![0; 64]
                });
                match step {
                    Ok(Step::Send(_)) => {
                        assert_eq!(signed, 1, "case {case}");
                        "challenge"
                    }
                    Ok(Step::Open { .. }) => {
                        panic!("case {case}: a challenge cannot open a session")
                    }
                    Err(_) => {
                        assert_eq!(signed, 0, "case {case}: signed a refused challenge");
                        "challenge refused"
                    }
                }
            }
            PlaneMessage::Welcome(w) => {
                let every = heartbeat_interval(&w);
                assert!(
                    (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&every),
                    "case {case}: heartbeat every {every:?}"
                );
                ctx.set_plane_time(w.server_time_ms);
                let _ = ctx.now_ms();
                let _ = warnings(&health, w.health_limits);
                "welcome"
            }
            PlaneMessage::Error(e) => {
                if let Some(s) = e.retry_after_s {
                    let wait = backoff.retry_after(Duration::from_secs(s));
                    assert!(wait <= MAX_RETRY_AFTER * 2, "case {case}: waits {wait:?}");
                }
                "error"
            }
            PlaneMessage::Command(c) => {
                let now = ctx.now_ms();
                match validate::command(&c, now) {
                    Ok(()) => {
                        assert_box_safe(&c.body, now);
                        "command"
                    }
                    Err(_) => "command refused",
                }
            }
            PlaneMessage::Heartbeat(_) => "heartbeat",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    println!("{kinds:?}");
    // Every path was exercised, not just the decoder's refusals.
    for kind in [
        "refused",
        "challenge",
        "welcome",
        "error",
        "command",
        "command refused",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > MILLION / 1000,
            "{kind}: {kinds:?}"
        );
    }
}
