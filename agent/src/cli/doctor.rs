//! `farmhand-agent doctor --config FILE`: runs every check of a box's setup in order and
//! prints one line per check, `OK`, `FAIL` (with a `fix:` hint) or `SKIP` (with why).
//! Exit code 0 when nothing failed, 1 otherwise.
//!
//! Order matters: the config comes first, because every other check needs it; the network
//! checks run only when the config loaded. The checks themselves live in `checks` (the box)
//! and `plane_checks` (the control plane).

use super::check::{check, render, Check, Outcome};
use super::{checks, plane_checks, selftest};
use crate::config::AgentConfig;
use std::path::Path;

/// The names of the checks, in the order they run.
pub const CHECKS: [&str; 15] = [
    "config",
    "state dir",
    "identity",
    "dns",
    "proxysmart",
    "modems",
    "ports",
    "default login",
    "admin exposure",
    "box profile",
    "box health",
    "control plane",
    "tls",
    "agent endpoint",
    "clock",
];

/// Runs every check against the config at `config_path`.
pub async fn diagnose(config_path: &Path) -> Vec<Check> {
    crate::base::crypto::install_crypto_provider();
    let config = match AgentConfig::load(config_path) {
        Ok(config) => config,
        Err(e) => return config_failed(config_path, &e),
    };
    let mut out = vec![check("config", checks::config_ok(config_path, &config))];
    out.push(check("state dir", checks::state_dir(&config.state_dir)));
    out.push(check("identity", checks::identity(&config)));
    out.push(check("dns", checks::dns(&config).await));
    out.push(check("proxysmart", checks::proxysmart(&config).await));
    out.extend(box_checks(&config).await);
    let health = plane_checks::healthz(&config.control_plane).await;
    out.push(check("control plane", health.outcome()));
    out.push(check("tls", health.tls_outcome()));
    out.push(check(
        "agent endpoint",
        plane_checks::agent_endpoint(&config).await,
    ));
    out.push(check("clock", health.clock_outcome()));
    out
}

/// The read-only part of `selftest`: the modems, the port list, the box's safety, and what
/// the box profile says so far.
async fn box_checks(config: &AgentConfig) -> Vec<Check> {
    let mut found = Vec::new();
    if let Ok(client) = crate::boxside::proxysmart::ProxysmartClient::new(&config.proxysmart) {
        selftest::read_only(config, &client, &mut found).await;
    }
    let mut out: Vec<Check> = ["modems", "ports", "default login", "admin exposure"]
        .into_iter()
        .map(|name| {
            let outcome = found
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.outcome.clone())
                .unwrap_or_else(|| Outcome::Skip("ProxySmart could not be read".into()));
            check(name, outcome)
        })
        .collect();
    out.push(check(
        "box profile",
        selftest::profile_summary(&config.state_dir),
    ));
    out
}

fn config_failed(path: &Path, error: &crate::config::ConfigError) -> Vec<Check> {
    let first = check("config", checks::config_error(path, error));
    let skipped = CHECKS[1..]
        .iter()
        .map(|name| check(name, Outcome::Skip("the config did not load".into())));
    std::iter::once(first).chain(skipped).collect()
}

/// Runs the command: prints the report, returns the exit code.
pub async fn run(config_path: &Path) -> i32 {
    let checks = diagnose(config_path).await;
    print!("{}", render(&checks));
    i32::from(checks.iter().any(|c| c.outcome.failed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_config_fails_first_and_skips_the_rest() {
        let checks = diagnose(Path::new("/nonexistent/agent.toml")).await;
        assert_eq!(checks.len(), CHECKS.len());
        assert!(checks[0].outcome.failed());
        assert!(checks[1..]
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Skip(_))));
    }
}
