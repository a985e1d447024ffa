//! `farmhand-agent status`: finds the running agent's status file, prints it for a person
//! (or raw with `--json`) with its age, and exits 0 only when the agent is alive and
//! connected, so scripts and container health checks can use it. It needs no root: the
//! file is world-readable and holds nothing secret.

use crate::base::clock::now_ms;
use crate::config::FileConfig;
use crate::run::status_file::{self, StatusReport, STALE_AFTER, STATUS_FILE};
use anyhow::Context;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the packaged systemd unit tells the agent to write its status (`RuntimeDirectory`),
/// because the state directory itself is private (0700).
pub const PACKAGED_STATUS_FILE: &str = "/run/farmhand/status.json";
/// The config file used when none is given.
pub const DEFAULT_CONFIG: &str = "/etc/farmhand/agent.toml";

/// The status file to read: `--status-file`; else `<state_dir>/status.json` of `--config`;
/// else the packaged location when it exists; else the default config's state dir.
pub fn locate(status_file: Option<&Path>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = status_file {
        return Ok(path.to_path_buf());
    }
    if config.is_none() && Path::new(PACKAGED_STATUS_FILE).exists() {
        return Ok(PathBuf::from(PACKAGED_STATUS_FILE));
    }
    let config = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let file = FileConfig::parse(config, &text)?;
    Ok(file.state_dir().join(STATUS_FILE))
}

/// Runs the command; returns the process exit code.
pub fn run(status_file: Option<&Path>, config: Option<&Path>, json: bool) -> anyhow::Result<i32> {
    let path = locate(status_file, config)?;
    let report = match status_file::read(&path) {
        Ok(report) => report,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "not running: no status file at {} (the agent writes it while it runs; \
                 check `systemctl status farmhand-agent`)",
                path.display()
            );
            return Ok(1);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            println!(
                "cannot read {} (permission denied): run as the agent's user, or read the \
                 file the packaged service writes: --status-file {PACKAGED_STATUS_FILE}",
                path.display()
            );
            return Ok(1);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, &path, now_ms()));
    }
    Ok(if healthy(&report, now_ms()) { 0 } else { 1 })
}

/// Fresh and connected.
pub fn healthy(report: &StatusReport, now_ms: u64) -> bool {
    !is_stale(report, now_ms) && report.connected
}

fn is_stale(report: &StatusReport, now_ms: u64) -> bool {
    age(report.updated_at_ms, now_ms) > STALE_AFTER
}

fn age(at_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(at_ms))
}

/// "3 s", "4 min", "2 h".
pub fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// The report as a person reads it.
pub fn render(r: &StatusReport, path: &Path, now_ms: u64) -> String {
    let mut out = String::new();
    let updated = human(age(r.updated_at_ms, now_ms));
    let _ = writeln!(
        out,
        "farmhand-agent {} (pid {}); status from {}, last updated {updated} ago",
        r.agent_version,
        r.pid,
        path.display()
    );
    if is_stale(r, now_ms) {
        let _ = writeln!(
            out,
            "STALE: not updated for {updated} (a running agent rewrites it every {} s); \
             is farmhand-agent running? Try `systemctl status farmhand-agent`.",
            status_file::REFRESH.as_secs()
        );
    }
    let _ = writeln!(out, "connection:     {}", connection(r, now_ms));
    let _ = writeln!(out, "control plane:  {}", r.control_plane_url);
    let _ = writeln!(out, "agent id:       {}", r.agent_id);
    let proxysmart = match (&r.proxysmart_error, r.proxysmart_reachable) {
        (_, true) => "reachable".to_string(),
        (Some(e), false) => format!("UNREACHABLE: {e}"),
        (None, false) => "not polled yet".to_string(),
    };
    let _ = writeln!(out, "proxysmart:     {proxysmart}");
    render_modems(&mut out, r);
    render_health(&mut out, r);
    render_ports(&mut out, r);
    out
}

fn connection(r: &StatusReport, now_ms: u64) -> String {
    let sync = match r.last_frame_at_ms {
        Some(at) => format!("last sync {} ago", human(age(at, now_ms))),
        None => "never synced".to_string(),
    };
    match (&r.session_id, r.connected, &r.last_error) {
        (Some(session), true, _) => format!("connected (session {session}), {sync}"),
        (_, _, Some(error)) => format!("DISCONNECTED ({error}), {sync}"),
        _ => format!("DISCONNECTED, {sync}"),
    }
}

fn render_modems(out: &mut String, r: &StatusReport) {
    let _ = writeln!(out, "modems ({}):", r.modems.len());
    if r.modems.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  {:<16} {:<16} {:<40} ONLINE",
        "IMEI", "CARRIER", "IP"
    );
    for m in &r.modems {
        let ip = match (&m.ext_ip, m.rotating) {
            (_, true) => "(rotating)",
            (Some(ip), false) => ip.as_str(),
            (None, false) => "-",
        };
        let carrier = m.carrier.as_deref().unwrap_or("-");
        let online = if m.online { "yes" } else { "no" };
        let _ = writeln!(out, "  {:<16} {carrier:<16} {ip:<40} {online}", m.imei);
        if let Some(why) = m.unsellable_reason() {
            let _ = writeln!(out, "    not sold: {why}");
        }
        if let Some(s) = m.auto_rotation_s.filter(|s| *s > 0) {
            let _ = writeln!(
                out,
                "    the box rotates this modem itself every {} min",
                s / 60
            );
        }
    }
}

fn render_health(out: &mut String, r: &StatusReport) {
    let Some(health) = &r.health else {
        return;
    };
    let _ = writeln!(out, "box health:");
    for line in crate::boxside::health::describe(health) {
        let _ = writeln!(out, "  {line}");
    }
    for warning in crate::boxside::health::warnings(health, r.health_limits) {
        let _ = writeln!(out, "  WARNING: {warning}");
    }
}

fn render_ports(out: &mut String, r: &StatusReport) {
    let _ = writeln!(out, "managed ports ({}):", r.ports.len());
    if r.ports.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  {:<28} {:<16} {:<14} {:>6} {:>6}",
        "ALLOCATION", "IMEI", "PORT_ID", "HTTP", "SOCKS"
    );
    for p in &r.ports {
        let _ = writeln!(
            out,
            "  {:<28} {:<16} {:<14} {:>6} {:>6}",
            p.allocation_id, p.imei, p.port_id, p.http_port, p.socks_port
        );
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
