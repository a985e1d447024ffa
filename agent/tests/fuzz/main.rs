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

#[path = "../support/mod.rs"]
mod support;

mod frames;

use farmhand_agent::base::backoff::{Backoff, MAX_RETRY_AFTER};
use farmhand_agent::boxside::commands::validate;
use farmhand_agent::boxside::commands::Executor;
use farmhand_agent::boxside::health::{warnings, Probe};
use farmhand_agent::boxside::ports::port_name;
use farmhand_agent::config::policy::Policy;
use farmhand_agent::local::audit::read_recent;
use farmhand_agent::plane::session::heartbeat_interval;
use farmhand_protocol::handshake::{ClientHandshake, Step};
use farmhand_protocol::{
    decode, is_imei, CommandBody, CommandResult, Outcome, PlaneMessage, DEFAULT_MAX_FRAME_BYTES,
    NONCE_LEN, SUPPORTED_VERSIONS,
};
use frames::{frame, mutate_text, valid_command, valid_frame, Imeis, Rng, BUYER_PASSWORD};
use std::collections::BTreeMap;
use std::time::Duration;
use support::executor::Setup;
use support::TestBox;
use tokio::sync::mpsc;

const FRAMES: usize = 4000;
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

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
