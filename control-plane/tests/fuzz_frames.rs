//! Fuzz-style robustness of the agent gateway: thousands of random and mutated frames —
//! random bytes as binary frames (invalid UTF-8 included), random text, truncations of
//! valid frames, valid JSON with a value of the wrong type (huge and negative numbers
//! included), deep nesting and oversized frames — sent before the handshake and inside
//! authenticated sessions. Nothing panics, every case is answered with an `error` and a
//! close (or a close), and a legitimate session keeps working meanwhile.
//!
//! Deterministic: cases come from a fixed-seed xorshift (ring's generator cannot be
//! seeded), so a failure names a case that can be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{
    decode, encode, AgentMessage, Auth, CommandError, CommandErrorCode, CommandOutput,
    CommandResult, Heartbeat, Hello, Inventory, ModemsChanged, Outcome, PlaneMessage, Reconciled,
    Site, SUPPORTED_VERSIONS,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use support::agent::{open, Ws};
use support::flows::{allocate, release};
use support::{FakeAgent, TestPlane, PATIENCE};
use tokio_tungstenite::tungstenite::Message;

const SEED: u64 = 0x5eed_f00d_cafe_d00d;
const PRE_HANDSHAKE_CASES: usize = 4000;
const IN_SESSION_CASES: usize = 400;
const MAX_FRAME: usize = 16 * 1024;
const WORKERS: usize = 4;
const IMEI: &str = "350000000000018";

/// xorshift64*: tiny, fast, and good enough to pick mutations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[derive(Debug, Clone)]
enum Case {
    Text(String),
    Binary(Vec<u8>),
}

impl Case {
    fn message(&self) -> Message {
        match self {
            Case::Text(t) => Message::text(t.clone()),
            Case::Binary(b) => Message::binary(b.clone()),
        }
    }

    /// Whether the case happens to be a valid message (then no refusal is owed).
    fn is_valid(&self) -> bool {
        matches!(self, Case::Text(t) if decode::<AgentMessage>(t, MAX_FRAME).is_ok())
    }
}

/// One valid frame of every agent message type.
fn valid_frames() -> Vec<String> {
    let modem = support::modem(IMEI, "Vodafone");
    let site = Site {
        public_host: "203.0.113.7".into(),
        country: "DE".into(),
        city: Some("Berlin".into()),
    };
    let messages = [
        AgentMessage::Hello(Hello {
            versions: SUPPORTED_VERSIONS,
            agent_id: "ag_x".into(),
            agent_version: "0.1.0".into(),
        }),
        AgentMessage::Auth(Auth {
            signature: "c2lnbmF0dXJl".into(),
        }),
        AgentMessage::Inventory(Inventory {
            site,
            proxysmart_reachable: true,
            modems: vec![modem.clone()],
            ports: vec![],
            max_ports_per_modem: Some(2),
            capabilities: None,
            probes_refused: false,
        }),
        AgentMessage::ModemsChanged(ModemsChanged {
            proxysmart_reachable: true,
            changed: vec![modem],
            removed: vec![IMEI.into()],
        }),
        AgentMessage::CommandResult(CommandResult {
            id: "c_1".into(),
            outcome: Outcome::Ok {
                output: CommandOutput::Reconcile(Reconciled {
                    removed: vec!["al_1".into()],
                    missing: vec![],
                }),
            },
        }),
        AgentMessage::CommandResult(CommandResult {
            id: "c_2".into(),
            outcome: Outcome::Error {
                error: CommandError::new(CommandErrorCode::ModemOffline, "offline"),
            },
        }),
        AgentMessage::Heartbeat(Heartbeat { time_ms: 1 }),
        AgentMessage::Usage(farmhand_protocol::UsageReport {
            measured_at_ms: 1,
            allocations: vec![farmhand_protocol::AllocationUsage {
                allocation_id: "al_1".into(),
                bytes_in: 21_100_000_000,
                bytes_out: 0,
            }],
        }),
    ];
    messages.iter().map(encode).collect()
}

/// A JSON value whose type differs from `original`'s (never null: optional fields take it).
fn wrong_type(rng: &mut XorShift, original: &Value) -> Value {
    let candidates = [
        serde_json::from_str("1e308").unwrap(),
        serde_json::from_str("18446744073709551616").unwrap(),
        serde_json::json!(-1),
        serde_json::json!("x"),
        serde_json::json!([1, "two"]),
        serde_json::json!({"k": 1}),
        serde_json::json!(true),
    ];
    loop {
        let candidate = &candidates[rng.below(candidates.len())];
        let same = std::mem::discriminant(candidate) == std::mem::discriminant(original);
        if !same {
            return candidate.clone();
        }
    }
}

/// Replaces one randomly chosen value anywhere in `value` with one of another type.
fn mutate(rng: &mut XorShift, value: &mut Value) {
    let children: Vec<&mut Value> = match value {
        Value::Object(map) => map.values_mut().collect(),
        Value::Array(items) => items.iter_mut().collect(),
        _ => vec![],
    };
    if children.is_empty() || rng.below(3) == 0 {
        *value = wrong_type(rng, value);
        return;
    }
    let n = children.len();
    let pick = rng.below(n);
    if let Some(child) = children.into_iter().nth(pick) {
        mutate(rng, child);
    }
}

fn nested(depth: usize, open: &str, close: &str, core: &str) -> String {
    format!("{}{core}{}", open.repeat(depth), close.repeat(depth))
}

/// One case, chosen by kind.
fn case(rng: &mut XorShift, valid: &[String]) -> Case {
    let frame = &valid[rng.below(valid.len())];
    match rng.below(8) {
        0 => {
            let len = rng.below(512);
            Case::Binary(rng.bytes(len))
        }
        1 => {
            let len = 1 + rng.below(256);
            let text: String = (0..len)
                .map(|_| char::from(32 + rng.below(95) as u8))
                .collect();
            Case::Text(text)
        }
        2 | 3 => Case::Text(frame[..rng.below(frame.len())].to_string()),
        4..=6 => {
            let mut value: Value = serde_json::from_str(frame).unwrap();
            mutate(rng, &mut value);
            Case::Text(value.to_string())
        }
        _ => match rng.below(4) {
            0 => Case::Text(nested(1000 + rng.below(5000), "[", "]", "1")),
            1 => Case::Text(nested(1000 + rng.below(2000), "{\"a\":", "}", "1")),
            2 => {
                // A field of a valid frame replaced by 100 nested arrays (under serde_json's
                // recursion limit, so the type check has to catch it).
                let mut value: Value = serde_json::from_str(frame).unwrap();
                let deep: Value = serde_json::from_str(&nested(100, "[", "]", "0")).unwrap();
                if let Value::Object(map) = &mut value {
                    let keys: Vec<String> = map.keys().filter(|k| *k != "type").cloned().collect();
                    map.insert(keys[rng.below(keys.len())].clone(), deep);
                }
                Case::Text(value.to_string())
            }
            _ => Case::Text(format!(
                "{{\"type\":\"heartbeat\",\"time_ms\":1,\"pad\":\"{}\"}}",
                "x".repeat(MAX_FRAME + rng.below(1000))
            )),
        },
    }
}

/// Sends `case` and reads until the plane closes: at most one `error` first, which must be
/// the plane's only answer (a `challenge` would mean the case was taken as a hello).
async fn expect_error_or_close(mut ws: Ws, case: &Case) {
    ws.send(case.message()).await.unwrap();
    loop {
        let next = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no answer to {case:?}"));
        match next {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(Message::Text(t))) => match decode::<PlaneMessage>(t.as_str(), usize::MAX) {
                Ok(PlaneMessage::Error(_))
                | Ok(PlaneMessage::Heartbeat(_))
                | Ok(PlaneMessage::Command(_)) => continue,
                other => panic!("unexpected answer {other:?} to {case:?}"),
            },
            Some(Ok(_)) => continue,
        }
    }
}

/// Runs `cases` before any handshake, `WORKERS` connections at a time.
async fn run_pre_handshake(plane: &Arc<TestPlane>, cases: Vec<Case>) {
    let queue = Arc::new(std::sync::Mutex::new(cases));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (plane, queue) = (plane.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(case) = queue.lock().unwrap().pop() else {
                    return;
                };
                expect_error_or_close(open(&plane).await, &case).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

/// Runs each case inside a fresh authenticated session of one of the worker identities.
async fn run_in_sessions(plane: &Arc<TestPlane>, cases: Vec<Case>) {
    let queue = Arc::new(std::sync::Mutex::new(cases));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let identity = plane.enroll().await;
        let (plane, queue) = (plane.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(case) = queue.lock().unwrap().pop() else {
                    return;
                };
                let agent = FakeAgent::connect(&plane, &identity).await.unwrap();
                expect_error_or_close(agent.ws, &case).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_never_break_the_gateway() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let plane = Arc::new(
        TestPlane::start_with(|c| {
            c.max_frame_bytes = MAX_FRAME;
            // Every case is a failed handshake from 127.0.0.1: let them all through.
            c.agent_auth_failure_limit = farmhand_control::config::RateLimit {
                max: 1_000_000,
                window_s: 1,
            };
        })
        .await,
    );
    let identity = plane.enroll().await;
    let mut legit = FakeAgent::connect(&plane, &identity).await.unwrap();
    legit
        .send_inventory(vec![support::modem(IMEI, "Vodafone")])
        .await;
    plane.wait_available(IMEI).await;

    let mut rng = XorShift(SEED);
    let valid = valid_frames();
    let mut make = |n: usize| -> Vec<Case> {
        (0..n)
            .map(|_| case(&mut rng, &valid))
            .filter(|c| !c.is_valid())
            .collect()
    };
    let (before, during) = (make(PRE_HANDSHAKE_CASES), make(IN_SESSION_CASES));
    assert!(
        before.len() > PRE_HANDSHAKE_CASES * 9 / 10,
        "mostly invalid cases"
    );
    let started = Instant::now();
    run_pre_handshake(&plane, before).await;
    // The legitimate session is still served between the two rounds.
    legit
        .send(&AgentMessage::Heartbeat(Heartbeat { time_ms: 2 }))
        .await;
    let alloc = allocate(&plane, &mut legit, "o-during-fuzz").await;
    run_in_sessions(&plane, during).await;
    let id = alloc["allocation_id"].as_str().unwrap();
    release(&plane, &mut legit, id).await;
    assert!(plane.connected(&identity.agent_id).await);
    eprintln!("fuzz cases took {:?}", started.elapsed());
    assert_eq!(panics.load(Ordering::SeqCst), 0, "something panicked");
    let r = plane.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
}
