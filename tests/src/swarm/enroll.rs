//! Gives every simulated agent a real identity: a fresh Ed25519 key, enrolled through the
//! REST API exactly as `farmhand-agent enroll` does (token from an admin key, then
//! `POST /v1/agent/enroll`).

use crate::harness::Api;
use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::{stream, StreamExt, TryStreamExt};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

/// One enrolled simulated agent.
#[derive(Debug)]
pub struct Identity {
    /// Its position in the swarm (names its IMEIs).
    pub index: usize,
    /// The id the plane assigned.
    pub agent_id: String,
    /// Its private key.
    pub key: Ed25519KeyPair,
}

/// Enrolls `count` agents with at most `concurrency` enrollments in flight.
pub async fn enroll_all(
    admin: &Api,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Identity>> {
    let mut all: Vec<Identity> = stream::iter(0..count)
        .map(|index| enroll_one(admin, index))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    all.sort_by_key(|i| i.index);
    Ok(all)
}

async fn enroll_one(admin: &Api, index: usize) -> anyhow::Result<Identity> {
    let reply = admin
        .post(
            "/v1/enrollment-tokens",
            json!({"label": format!("swarm-{index}"), "ttl_s": 3600}),
        )
        .await
        .context("creating an enrollment token")?;
    let token = reply
        .str("/token")
        .with_context(|| format!("no enrollment token: {} {}", reply.status, reply.body))?
        .to_owned();
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("generating an Ed25519 key"))?;
    let key = Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|_| anyhow::anyhow!("reading the generated key"))?;
    let body = json!({
        "token": token,
        "public_key": STANDARD.encode(key.public_key().as_ref()),
        "hostname": format!("swarm-{index}"),
    });
    let reply = admin
        .with_key(None)
        .post("/v1/agent/enroll", body)
        .await
        .context("enrolling")?;
    let agent_id = reply
        .str("/agent_id")
        .with_context(|| format!("enrollment refused: {} {}", reply.status, reply.body))?
        .to_owned();
    Ok(Identity {
        index,
        agent_id,
        key,
    })
}
