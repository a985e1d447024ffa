//! `proxysmart-sim`: runs the ProxySmart simulator as a process for scripts and demos.
//!
//! ```text
//! proxysmart-sim --listen 127.0.0.1:0 --modems 4 --username proxy --password-file pw.txt
//! ```
//! After binding it prints exactly `PROXYSMART_URL=http://IP:PORT` on stdout; logs go to
//! stderr. Ctrl-C or SIGTERM shuts it down cleanly. Drive it through `/_sim/` (see
//! `docs/simulator.md`).

use anyhow::{bail, Context, Result};
use clap::Parser;
use farmhand_sim::{self as sim, Quirks, SimConfig};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::util::SubscriberInitExt;

/// A simulated ProxySmart box: API, admin interface and real per-port proxies.
#[derive(Debug, Parser)]
#[command(name = "proxysmart-sim", version = env!("CARGO_PKG_VERSION"))]
struct Args {
    /// Address for the API (and `/_sim/` admin) listener; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of simulated modems (0..=250).
    #[arg(long, default_value_t = 4)]
    modems: usize,
    /// HTTP Basic auth user of the API.
    #[arg(long, default_value = "proxy")]
    username: String,
    /// File whose first line (trimmed) is the API password.
    #[arg(long)]
    password_file: PathBuf,
    /// How long a rotation shows "IP_RESET" (default: 2000, or the profile's).
    #[arg(long)]
    rotation_delay_ms: Option<u64>,
    /// Address the per-port proxies bind to (default: the listen address's IP).
    #[arg(long)]
    proxy_ip: Option<IpAddr>,
    /// The box's zone in seconds east of UTC: CREATED_AT and expiry use local time.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    utc_offset_s: i32,
    /// store_port of an existing portID replaces the whole record: optional fields left
    /// out (expiry, quota, speed limits) are cleared instead of kept.
    #[arg(long)]
    store_port_replaces: bool,
    /// The box as first documented (`classic`, default) or as operators' live boxes behave
    /// (`field`: every quirk the evidence shows; docs/simulator.md lists them).
    #[arg(long, default_value = "classic")]
    profile: String,
    /// Turn on one more quirk by name (repeatable), e.g. `--quirk drops_quota`.
    #[arg(long = "quirk")]
    quirks: Vec<String>,
    /// How long writes take to show in the port list, ms (overrides the profile's).
    #[arg(long)]
    write_delay_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    farmhand_ops::logging::text_subscriber(
        farmhand_ops::logging::filter(Some("info")).map_err(anyhow::Error::msg)?,
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
    .init();
    let args = Args::parse();
    let password = read_password(&args.password_file)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let base = match args.profile.as_str() {
        "field" => SimConfig::field(),
        _ => SimConfig::default(),
    };
    let mut quirks = Quirks::profile(&args.profile)?;
    for name in &args.quirks {
        quirks.enable(name)?;
    }
    if let Some(ms) = args.write_delay_ms {
        quirks.write_delay = Duration::from_millis(ms);
    }
    let config = SimConfig {
        modems: args.modems,
        username: args.username,
        password,
        rotation_delay: args
            .rotation_delay_ms
            .map_or(base.rotation_delay, Duration::from_millis),
        proxy_ip: args.proxy_ip.unwrap_or(args.listen.ip()),
        utc_offset_s: args.utc_offset_s,
        store_port_replaces: args.store_port_replaces,
        quirks,
        first_modem: 0,
    };
    // Before announcing: a SIGTERM right after the URL is printed must not end the process
    // by its default action.
    let signals = signals()?;
    let shutdown = CancellationToken::new();
    let handle = sim::start(listener, config, shutdown.clone())
        .await
        .context("cannot start the simulator")?;
    announce(&handle.base_url())?;
    signals.await;
    tracing::info!("shutting down");
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), handle.stopped())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5 s; exiting anyway");
    }
    Ok(())
}

fn read_password(path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    let password = text.lines().next().unwrap_or_default().trim().to_string();
    if password.is_empty() {
        bail!("password file {} is empty", path.display());
    }
    Ok(password)
}

fn announce(url: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "PROXYSMART_URL={url}").context("cannot write to stdout")?;
    out.flush().context("cannot flush stdout")
}

/// Ctrl-C or SIGTERM, their handlers installed now; the future completes on either.
fn signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the Ctrl-C handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
