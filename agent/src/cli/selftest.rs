//! `farmhand-agent selftest`: what this seller's real box does when the agent writes a
//! port, checked on the box itself — the first thing to run after installing, and what to
//! send support (`--json`).
//!
//! It reads the status and the port list, then, on an online modem that has no marketplace
//! port, creates a scratch port (`farmhand-selftest-…`) exactly as a provision would
//! (`boxside::ports`: pair, write path, read-back, adoption, apply, a proxy handshake with
//! the port's credentials against the box itself — no internet needed), re-stores it with
//! an expiry, a quota and a speed limit to see which the box keeps, removes it and checks
//! it is gone, and with `--rotate` times one rotation of that modem. One verdict per
//! capability; everything learned goes into the box profile the running agent uses.
//!
//! It never leaves a port behind: the scratch port is removed on every path out, Ctrl-C
//! included, and a run that was killed has its port removed by the next selftest, the next
//! agent start, or `reconcile`. The read-only part (status, ports, the box's safety, the
//! profile so far) is also part of `doctor`.

use super::box_safety;
use super::check::{check, Check, Outcome};
use crate::boxside::box_profile::{BoxProfile, BoxProfileHandle, WritePath};
use crate::boxside::ports::{Ports, Want, SCRATCH_PREFIX};
use crate::boxside::proxysmart::{normalize_modems, BoxClock, PortEntry, ProxysmartClient};
use crate::boxside::rotation::Rotation;
use crate::config::AgentConfig;
use crate::local::journal::PortLimits;
use farmhand_protocol::{Modem, Secret};
use serde_json::json;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the scratch port is valid for (it is removed long before).
const SCRATCH_LIFETIME_MS: u64 = 3600 * 1000;
/// The quota and speed limit the scratch port is re-stored with, to see if the box keeps them.
const PROBE_LIMITS: PortLimits = PortLimits {
    bandwidth_kbit: Some(2000),
    traffic_quota_mb: Some(100),
};

/// What a selftest found.
#[derive(Debug, Clone)]
pub struct Report {
    /// One verdict per step, in order.
    pub checks: Vec<Check>,
    /// The box profile afterwards.
    pub profile: BoxProfile,
}

impl Report {
    /// Whether any step failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome.failed())
    }
}

/// Runs the command: prints the report (text or JSON), returns the exit code.
pub async fn run(config_path: &Path, rotate: bool, as_json: bool, stop: CancellationToken) -> i32 {
    crate::base::crypto::install_crypto_provider();
    let config = match AgentConfig::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("selftest: {e}");
            return 2;
        }
    };
    let report = selftest(&config, rotate, &stop).await;
    if as_json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", render(&report));
    }
    i32::from(report.failed())
}

/// The whole selftest against the box of `config`.
pub async fn selftest(config: &AgentConfig, rotate: bool, stop: &CancellationToken) -> Report {
    let profile = Arc::new(BoxProfileHandle::load(&config.state_dir));
    let mut checks = Vec::new();
    let client = match ProxysmartClient::new(&config.proxysmart) {
        Ok(client) => client,
        Err(e) => {
            checks.push(check(
                "status",
                Outcome::fail(e.to_string(), "check proxysmart.url"),
            ));
            return Report {
                checks,
                profile: profile.snapshot(),
            };
        }
    };
    let clock = Arc::new(BoxClock::new(
        config.proxysmart.box_utc_offset,
        profile.snapshot().utc_offset_s,
    ));
    let ports = Ports::new(
        client.clone(),
        profile.clone(),
        clock,
        config.proxysmart.ports.clone(),
    );
    let modems = read_only(config, &client, &mut checks).await;
    if let Some(modems) = modems {
        let test = writes(config, &ports, &modems, rotate, &mut checks);
        tokio::select! {
            () = test => {}
            () = stop.cancelled() => {
                checks.push(check("interrupted", Outcome::fail("stopped before the end", "run selftest again")));
            }
        }
        // On every path out, nothing of the selftest is left on the box.
        if let Err(e) = ports.remove_scratch().await {
            checks.push(check(
                "cleanup",
                Outcome::fail(
                    format!("a scratch port could not be removed: {}", e.message),
                    "the next selftest or agent start removes it; or delete ports named farmhand-selftest-* in the ProxySmart panel",
                ),
            ));
        }
    }
    Report {
        checks,
        profile: profile.snapshot(),
    }
}

/// The part that only reads (also run by `doctor`): status, ports and the box's safety.
/// Returns the modems when the status could be read.
pub async fn read_only(
    config: &AgentConfig,
    client: &ProxysmartClient,
    checks: &mut Vec<Check>,
) -> Option<Vec<Modem>> {
    let modems = match client.show_status().await {
        Ok(entries) => {
            let modems = normalize_modems(&entries, &[]);
            let skipped = entries.len().saturating_sub(modems.len());
            let detail = format!(
                "{} modems ({} online), {skipped} entries skipped (being added, placeholders)",
                modems.len(),
                modems.iter().filter(|m| m.online).count()
            );
            checks.push(check("status", Outcome::Ok(detail)));
            checks.push(check("modems", sellable(&modems)));
            Some(modems)
        }
        Err(e) => {
            checks.push(check(
                "status",
                Outcome::fail(
                    e.to_string(),
                    "run `farmhand-agent doctor` for the connection checks",
                ),
            ));
            None
        }
    };
    match client.list_ports().await {
        Ok(ports) => {
            let ours = ports
                .iter()
                .filter(|p| p.port_name.starts_with("farmhand-"))
                .count();
            let detail = format!("{} ports, {ours} of them Farmhand's", ports.len());
            checks.push(check("ports", Outcome::Ok(detail)));
        }
        Err(e) => checks.push(check(
            "ports",
            Outcome::fail(
                e.to_string(),
                "ProxySmart's list_ports_json must answer JSON",
            ),
        )),
    }
    checks.push(check(
        "default login",
        box_safety::default_credentials(config).await,
    ));
    checks.push(check("admin exposure", box_safety::exposure(config)));
    modems
}

/// Warns about modems online but not sellable, and says why (a SIM out of credit…).
pub fn sellable(modems: &[Modem]) -> Outcome {
    let unsellable: Vec<String> = modems
        .iter()
        .filter_map(|m| {
            Some(format!(
                "{} ({}): {}",
                m.imei,
                m.nick,
                m.unsellable_reason()?
            ))
        })
        .collect();
    if unsellable.is_empty() {
        return Outcome::Ok(format!(
            "{} modems, none held back by its SIM",
            modems.len()
        ));
    }
    Outcome::warn(
        format!("not sellable: {}", unsellable.join("; ")),
        "top up or replace the SIM; the marketplace places nothing on these modems until then",
    )
}

/// The box profile so far, for `doctor`.
pub fn profile_summary(state_dir: &Path) -> Outcome {
    let path = state_dir.join(crate::boxside::box_profile::PROFILE_FILE);
    match crate::boxside::box_profile::read(&path) {
        None => Outcome::Skip(
            "nothing learned about this box yet: run `farmhand-agent selftest` once".into(),
        ),
        Some(p) => {
            let yes_no = |v: Option<bool>| match v {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            };
            Outcome::Ok(format!(
                "keeps quota: {}, speed limit: {}, expiry: {}; write path: {:?}; writes show after {} ms; rotation {} ms",
                yes_no(p.quota),
                yes_no(p.speed_limit),
                yes_no(p.expiry),
                p.write_path,
                p.write_visibility_ms.unwrap_or(0),
                p.rotation_ms.unwrap_or(0)
            ))
        }
    }
}

/// The writing part: scratch port, fields, removal, rotation.
async fn writes(
    config: &AgentConfig,
    ports: &Ports,
    modems: &[Modem],
    rotate: bool,
    checks: &mut Vec<Check>,
) {
    match ports.remove_scratch().await {
        Ok(0) => {}
        Ok(n) => checks.push(check(
            "leftovers",
            Outcome::Ok(format!("removed {n} scratch port(s) of an interrupted run")),
        )),
        Err(e) => {
            checks.push(check(
                "leftovers",
                Outcome::fail(e.message, "see the ports check"),
            ));
            return;
        }
    }
    let Some(modem) = unsold_modem(config, ports, modems).await else {
        checks.push(check(
            "write",
            Outcome::Skip(
                "no online, sellable modem without a marketplace port: the write tests need one (run it when a modem is free)"
                    .into(),
            ),
        ));
        return;
    };
    let want = scratch(&modem.imei);
    let started = std::time::Instant::now();
    let port = match ports.create(&want).await {
        Ok(port) => port,
        Err(e) => {
            let fix = match e.field.as_deref() {
                Some("proxy_login" | "proxy_password") => {
                    "this box keeps credentials of its own: it cannot sell ports with the marketplace's credentials; tell support"
                }
                _ => "send `farmhand-agent selftest --json` to support",
            };
            checks.push(check("create port", Outcome::fail(error_text(&e), fix)));
            return;
        }
    };
    checks.push(check(
        "create port",
        created(ports, &port, started.elapsed()),
    ));
    checks.push(check("proxy", proxy_verdict(config, &port)));
    fields(ports, &port, &want, checks).await;
    match ports.remove(&port.port_id).await {
        Ok(_) => checks.push(check(
            "remove port",
            Outcome::Ok(format!("{} is gone", port.port_id)),
        )),
        Err(e) => checks.push(check(
            "remove port",
            Outcome::fail(error_text(&e), "see cleanup"),
        )),
    }
    if rotate {
        checks.push(check("rotation", rotation(config, ports, &modem).await));
    }
}

/// An online, sellable modem the seller did not exclude, without a port of ours.
async fn unsold_modem(config: &AgentConfig, ports: &Ports, modems: &[Modem]) -> Option<Modem> {
    let listed: Vec<PortEntry> = ports.client().list_ports().await.unwrap_or_default();
    modems
        .iter()
        .filter(|m| m.online && m.unsellable_reason().is_none() && m.ext_ip.is_some())
        .filter(|m| !config.policy.excludes(&m.imei))
        .find(|m| {
            !listed
                .iter()
                .any(|p| p.imei == m.imei && p.port_name.starts_with("farmhand-"))
        })
        .cloned()
}

/// The scratch port for `imei`: random credentials, an hour's expiry, no limits (those are
/// probed on the existing port afterwards).
fn scratch(imei: &str) -> Want {
    let id = format!(
        "{:012x}",
        crate::base::backoff::random_u64() & 0xffff_ffff_ffff
    );
    Want {
        imei: imei.to_string(),
        name: format!("{SCRATCH_PREFIX}{id}"),
        login: format!("fhst{}", &id[..8]),
        password: Secret::new(format!("fhst{id}")),
        expires_at_ms: crate::base::clock::now_ms() + SCRATCH_LIFETIME_MS,
        limits: PortLimits::default(),
    }
}

fn created(ports: &Ports, port: &PortEntry, took: Duration) -> Outcome {
    let p = ports.profile().snapshot();
    let path = match p.write_path {
        Some(WritePath::Form) => "the /conf/add_port form (the JSON write did not take)",
        _ => "/crud/store_port",
    };
    let own_id = if p.assigns_port_id == Some(true) {
        ", the box chose its id"
    } else {
        ""
    };
    let forms: Vec<String> = p.reply_forms.iter().map(|f| format!("{f:?}")).collect();
    Outcome::Ok(format!(
        "{} on {}/{} through {path}{own_id}; shown after {} ms; replies: {}; {} ms in all",
        port.port_id,
        port.http_port.unwrap_or(0),
        port.socks_port.unwrap_or(0),
        p.write_visibility_ms.unwrap_or(0),
        forms.join(", "),
        took.as_millis()
    ))
}

fn proxy_verdict(config: &AgentConfig, port: &PortEntry) -> Outcome {
    match &config.proxysmart.ports.proxy_host {
        Some(host) => Outcome::Ok(format!(
            "HTTP {host}:{} and SOCKS5 {host}:{} take the port's credentials",
            port.http_port.unwrap_or(0),
            port.socks_port.unwrap_or(0)
        )),
        None => Outcome::Skip("proxysmart.proxy_host is \"\": not checked".into()),
    }
}

/// Re-stores the port with an expiry, a quota and a speed limit; a verdict for each.
async fn fields(ports: &Ports, port: &PortEntry, scratch: &Want, checks: &mut Vec<Check>) {
    let mut want = scratch.clone();
    want.limits = PROBE_LIMITS;
    let verdicts = match ports.probe_fields(port, &want).await {
        Ok(v) => v,
        Err(e) => {
            checks.push(check(
                "fields",
                Outcome::fail(error_text(&e), "send --json to support"),
            ));
            return;
        }
    };
    checks.push(check(
        "expiry",
        if verdicts.expiry {
            Outcome::Ok("the box keeps PROXY_VALID_BEFORE".into())
        } else {
            Outcome::warn(
                "the box does not keep the port expiry",
                "nothing to do: the control plane ends ports on time itself",
            )
        },
    ));
    checks.push(check(
        "quota",
        match verdicts.quota {
            Some(true) => Outcome::Ok("the box keeps a traffic quota (bw_quota)".into()),
            _ => Outcome::warn(
                "the box does not keep a traffic quota",
                "orders with a quota go to other boxes; others are sold here as usual",
            ),
        },
    ));
    checks.push(check(
        "speed limit",
        match verdicts.speed_limit {
            Some(true) => Outcome::Ok("the box keeps speed limits".into()),
            Some(false) => Outcome::warn(
                "the box does not keep speed limits",
                "orders with a speed limit go to other boxes",
            ),
            None => {
                Outcome::Skip("the box does not list speed limits: they cannot be checked".into())
            }
        },
    ));
}

async fn rotation(config: &AgentConfig, ports: &Ports, modem: &Modem) -> Outcome {
    let started = std::time::Instant::now();
    let rotation = Rotation {
        client: ports.client(),
        profile: ports.profile(),
        timeout: config.proxysmart.rotation_timeout,
    };
    match rotation.rotate(&modem.imei, modem.ext_ip.as_deref()).await {
        Ok(Some(ip)) if Some(ip.as_str()) != modem.ext_ip.as_deref() => Outcome::Ok(format!(
            "{} got a new IP in {:.1} s",
            modem.imei,
            started.elapsed().as_secs_f64()
        )),
        Ok(Some(_)) => Outcome::warn(
            format!("{} came back with the same IP", modem.imei),
            "the carrier decides; try again later",
        ),
        Ok(None) => Outcome::fail(
            format!(
                "no IP within proxysmart.rotation_timeout_s ({} s)",
                config.proxysmart.rotation_timeout.as_secs()
            ),
            "raise rotation_timeout_s if this box's rotations are slow",
        ),
        Err(e) => Outcome::fail(error_text(&e), "check the modem in the ProxySmart panel"),
    }
}

fn error_text(e: &farmhand_protocol::CommandError) -> String {
    match &e.field {
        Some(field) => format!("{} ({}: {field})", e.message, e.code.as_str()),
        None => format!("{} ({})", e.message, e.code.as_str()),
    }
}

/// The report as printed, in `doctor`'s form, with where the profile went.
pub fn render(report: &Report) -> String {
    let mut out = super::check::render(&report.checks);
    let _ = writeln!(
        out,
        "box profile: {}",
        serde_json::to_string(&report.profile).unwrap_or_default()
    );
    out
}

/// The report for support tickets.
pub fn to_json(report: &Report) -> String {
    let checks: Vec<serde_json::Value> = report
        .checks
        .iter()
        .map(|c| {
            let (result, detail, fix) = match &c.outcome {
                Outcome::Ok(d) => ("pass", d.clone(), None),
                Outcome::Skip(d) => ("skip", d.clone(), None),
                Outcome::Warn { detail, fix } => ("warn", detail.clone(), Some(fix.clone())),
                Outcome::Fail { detail, fix } => ("fail", detail.clone(), Some(fix.clone())),
            };
            json!({"check": c.name, "result": result, "detail": detail, "fix": fix})
        })
        .collect();
    json!({
        "agent_version": crate::base::version::LONG_VERSION,
        "checks": checks,
        "box_profile": report.profile,
    })
    .to_string()
}
