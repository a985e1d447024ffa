//! An agent enrolled against any control plane (in-process or a process), for tests that
//! run many agents or an agent next to a [`super::PlaneProcess`].

use super::api::Api;
use anyhow::Context;
use farmhand_agent::{AgentConfig, ControlPlaneConfig, Masked, ProxysmartConfig};
use farmhand_protocol::Site;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Creates an enrollment token with `admin`, enrolls a fresh key in `state_dir` against
/// `plane_url` (plain HTTP) and returns the agent id and a config for the simulator at
/// `sim_url` (password "proxy"), polling every `poll_interval`.
pub async fn enroll_agent(
    admin: &Api,
    plane_url: &str,
    sim_url: &str,
    state_dir: &Path,
    poll_interval: Duration,
) -> anyhow::Result<(String, AgentConfig)> {
    let reply = admin
        .post(
            "/v1/enrollment-tokens",
            json!({"label": "fault-seller", "ttl_s": 600}),
        )
        .await?;
    let token = reply
        .str("/token")
        .with_context(|| format!("no enrollment token in {:?}", reply.body))?
        .to_owned();
    let control_plane = ControlPlaneConfig::plaintext(plane_url);
    let agent_id = farmhand_agent::enroll(&control_plane, &token, state_dir).await?;
    let config = AgentConfig {
        state_dir: state_dir.to_path_buf(),
        control_plane,
        proxysmart: ProxysmartConfig {
            poll_interval,
            ..ProxysmartConfig::new(sim_url, "proxy", Masked::new("proxy"))
        },
        site: Site {
            public_host: "127.0.0.1".into(),
            country: "DE".into(),
            city: None,
        },
        policy: Default::default(),
        metrics: Default::default(),
        log: Default::default(),
        usage: Default::default(),
        health: Default::default(),
    };
    // An agent refuses a config it cannot run with (a poll faster than it allows, …), and
    // a test that spawns it and drops `run`'s result would only see it never connect.
    config
        .validate()
        .context("the agent would refuse this config")?;
    Ok((agent_id, config))
}
