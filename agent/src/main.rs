//! `farmhand-agent`: the thin binary. Parses the command line, installs logging, and calls
//! the library: `enroll` once, then `run` as a daemon. Only this file listens for signals;
//! on Ctrl-C/SIGTERM it cancels the agent and waits a grace period for it to finish.

use anyhow::Context;
use clap::{Parser, Subcommand};
use farmhand_agent::config::pin::Pin;
use farmhand_agent::config::FileConfig;
use farmhand_agent::{AgentConfig, ControlPlaneConfig};
use farmhand_ops::logging::{self, LogFormat};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the agent may take to finish its command in flight after a signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "farmhand-agent",
    version = farmhand_agent::LONG_VERSION,
    about = "Farmhand seller-side agent for ProxySmart boxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log format on stderr: text (default) or json (one object per line, for collectors).
    /// Overrides `[log] format`.
    #[arg(long, global = true, env = "FARMHAND_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Register this box with a control plane using a one-time enrollment token.
    Enroll {
        /// Control-plane base URL, e.g. https://control.example.com (default: the --config's).
        #[arg(long, required_unless_present = "config")]
        server: Option<String>,
        /// Agent config whose [control_plane] URL and TLS settings to use.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsArgs,
        /// One-time enrollment token from the marketplace operator; `-` or absent: read
        /// it from stdin (keeps it out of the shell history and `ps`).
        #[arg(long, env = "FARMHAND_ENROLL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Read the token from this file instead (its first line).
        #[arg(long, env = "FARMHAND_ENROLL_TOKEN_FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// Where the key and identity are stored.
        #[arg(long, default_value = "/var/lib/farmhand")]
        state_dir: PathBuf,
    },
    /// Run the agent until stopped.
    Run {
        /// Path of the TOML configuration.
        #[arg(long, default_value = "/etc/farmhand/agent.toml")]
        config: PathBuf,
        /// Where to write the status `farmhand-agent status` reads (default:
        /// <state_dir>/status.json; the packaged unit uses /run/farmhand/status.json).
        #[arg(long)]
        status_file: Option<PathBuf>,
    },
    /// Check this box's setup (config, state dir, identity, DNS, ProxySmart, control plane,
    /// TLS, clock); exit 1 if anything fails.
    Doctor {
        /// Path of the TOML configuration.
        #[arg(long, default_value = "/etc/farmhand/agent.toml")]
        config: PathBuf,
    },
    /// Try what this box's ProxySmart does with a port: create a scratch port on a free
    /// modem, check every field it keeps and that its proxy takes the credentials, remove
    /// it; one verdict per capability (exit 1 if any failed). Never leaves a port behind.
    Selftest {
        /// Path of the TOML configuration.
        #[arg(long, default_value = "/etc/farmhand/agent.toml")]
        config: PathBuf,
        /// Also time one IP rotation of the modem used (the modem's IP changes).
        #[arg(long)]
        rotate: bool,
        /// Print the report as JSON (for support tickets).
        #[arg(long)]
        json: bool,
    },
    /// Show the running agent's connection, modems and ports (no root needed); exit 0 only
    /// when it is running and connected.
    Status {
        /// Read <state_dir>/status.json of this config (default: /run/farmhand/status.json
        /// if present, else the state dir of /etc/farmhand/agent.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Read this status file.
        #[arg(long, conflicts_with = "config")]
        status_file: Option<PathBuf>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what the control plane did on this box: the local audit of every command the
    /// agent executed (policy denials included), oldest first. Works while the agent runs.
    Audit {
        #[command(flatten)]
        state: StateDirArgs,
        /// Show the newest N entries; 0 shows all.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write everything this agent keeps about the box (identity, journal, audit, box
    /// profile, status) as one JSON document. Needs the agent stopped.
    Export {
        #[command(flatten)]
        state: StateDirArgs,
        /// Write to this file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Delete everything this agent keeps (key, identity, journal, audit, box profile,
    /// status) after you type ERASE. Needs the agent stopped; the box must be enrolled
    /// again to sell. Ports already on the box stay until their expiry.
    Erase {
        #[command(flatten)]
        state: StateDirArgs,
        /// Do not ask (scripts).
        #[arg(long)]
        yes: bool,
    },
}

/// Where the agent's state is, for the commands that read it without the agent.
#[derive(Debug, clap::Args)]
struct StateDirArgs {
    /// The agent's state directory (default: the state_dir of --config).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Read state_dir from this config (only state_dir is read).
    #[arg(
        long,
        conflicts_with = "state_dir",
        default_value = "/etc/farmhand/agent.toml"
    )]
    config: PathBuf,
}

impl StateDirArgs {
    /// `--state-dir`, or the state_dir of `--config`.
    fn dir(self) -> anyhow::Result<PathBuf> {
        match self.state_dir {
            Some(dir) => Ok(dir),
            None => Ok(farmhand_agent::local::audit::state_dir_of(&self.config)?),
        }
    }
}

/// TLS flags of `enroll`; each overrides the `--config` value.
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// PEM bundle of the CAs to trust instead of the system roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the control plane's certificate (`sha256:HEX`).
    #[arg(long)]
    pin_sha256: Option<String>,
    /// Allow an http:// server: no TLS (tests and loopback only).
    #[arg(long)]
    insecure_plaintext: bool,
}

/// The control-plane settings for `enroll`: the config's `[control_plane]`, then the flags.
fn enroll_settings(
    server: Option<String>,
    config: Option<&std::path::Path>,
    tls: TlsArgs,
) -> anyhow::Result<ControlPlaneConfig> {
    let mut plane = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            FileConfig::parse(path, &text)?.control_plane(path)?
        }
        None => ControlPlaneConfig::new(server.clone().unwrap_or_default()),
    };
    if let Some(server) = server {
        plane.url = server;
    }
    if let Some(pin) = tls.pin_sha256 {
        plane.pin_sha256 = Some(Pin::parse(&pin).map_err(anyhow::Error::msg)?);
    }
    plane.ca_file = tls.ca_file.or(plane.ca_file);
    plane.insecure_plaintext |= tls.insecure_plaintext;
    Ok(plane)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Run { .. }) {
        // `run` installs logging once its config (level, format) is loaded.
        logging::install(cli.log_format.unwrap_or_default(), None).map_err(anyhow::Error::msg)?;
    }
    // One thread is plenty for one WebSocket, a poller and a few commands at a time (the
    // journal's flushes go to the blocking pool): a second worker thread only costs memory
    // (its stack and its own malloc arena).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Cmd::Enroll {
                server,
                config,
                tls,
                token,
                token_file,
                state_dir,
            } => {
                let plane = enroll_settings(server, config.as_deref(), tls)?;
                let token = match token_file {
                    Some(file) => read_token_file(&file)?,
                    None => farmhand_agent::cli::enroll::token(token.as_deref())?,
                };
                enroll(&plane, &token, &state_dir).await?;
                farmhand_agent::cli::enroll::finish(&state_dir)
            }
            Cmd::Run {
                config,
                status_file,
            } => run(&config, status_file, cli.log_format).await,
            Cmd::Doctor { config } => exit_with(farmhand_agent::cli::doctor::run(&config).await),
            Cmd::Selftest {
                config,
                rotate,
                json,
            } => {
                // Ctrl-C or SIGTERM ends the test early; its scratch port is removed first.
                let signals = Signals::install()?;
                let stop = CancellationToken::new();
                let on_signal = stop.clone();
                tokio::spawn(async move {
                    signals.received().await;
                    on_signal.cancel();
                });
                exit_with(farmhand_agent::cli::selftest::run(&config, rotate, json, stop).await)
            }
            Cmd::Status {
                config,
                status_file,
                json,
            } => exit_with(farmhand_agent::cli::status::run(
                status_file.as_deref(),
                config.as_deref(),
                json,
            )?),
            Cmd::Audit { state, limit, json } => audit(state.dir()?, limit, json),
            Cmd::Export { state, out } => export(state.dir()?, out),
            Cmd::Erase { state, yes } => erase(state.dir()?, yes),
        }
    })
}

/// The enrollment token from the first line of `file`.
fn read_token_file(file: &std::path::Path) -> anyhow::Result<String> {
    let opened = std::fs::File::open(file)
        .with_context(|| format!("cannot read the token file {}", file.display()))?;
    farmhand_agent::cli::enroll::read_token(std::io::BufReader::new(opened))
        .with_context(|| format!("no token in {}", file.display()))
}

async fn enroll(
    plane: &ControlPlaneConfig,
    token: &str,
    state_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let server = &plane.url;
    let agent_id = farmhand_agent::enroll(plane, token, state_dir)
        .await
        .with_context(|| format!("enrollment with {server} failed"))?;
    println!("enrolled as {agent_id}; state in {}", state_dir.display());
    Ok(())
}

/// Exits with `code` (after flushing stdout) unless it is 0.
fn exit_with(code: i32) -> anyhow::Result<()> {
    if code != 0 {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::process::exit(code);
    }
    Ok(())
}

async fn run(
    config_path: &std::path::Path,
    status_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    let format = log_format.unwrap_or(config.log.format);
    logging::install(format, Some(&config.log.level)).map_err(anyhow::Error::msg)?;
    let status = match status_file {
        Some(path) => farmhand_agent::AgentStatus::with_status_file(path),
        None => farmhand_agent::AgentStatus::new(),
    };
    // Before the agent starts: a SIGTERM right after it says it runs must not end the
    // process by its default action.
    let signals = Signals::install()?;
    let shutdown = CancellationToken::new();
    let mut agent = tokio::spawn(farmhand_agent::run_with_status(
        config,
        shutdown.clone(),
        std::sync::Arc::new(status),
    ));
    tokio::select! {
        result = &mut agent => return result.context("agent task failed")?.map_err(Into::into),
        () = signals.received() => {
            tracing::info!(grace = ?SHUTDOWN_GRACE, "signal received; shutting down");
        }
    }
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, agent).await {
        Ok(result) => result.context("agent task failed")?.map_err(Into::into),
        Err(_) => anyhow::bail!("the agent did not stop within {SHUTDOWN_GRACE:?}; exiting anyway"),
    }
}

fn audit(dir: PathBuf, limit: usize, json: bool) -> anyhow::Result<()> {
    let (out, note) = farmhand_agent::local::audit::show(&dir, limit, json)?;
    print!("{out}");
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(())
}

fn export(dir: PathBuf, out: Option<PathBuf>) -> anyhow::Result<()> {
    let doc = farmhand_agent::cli::seller_data::export(&dir)?;
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    match out {
        None => print!("{text}"),
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("exported to {}", path.display());
        }
    }
    Ok(())
}

fn erase(dir: PathBuf, yes: bool) -> anyhow::Result<()> {
    use farmhand_agent::cli::seller_data::{self, CONFIRMATION};
    let deleted = if yes {
        seller_data::erase(&dir, std::io::Cursor::new(CONFIRMATION))?
    } else {
        eprintln!(
            "This deletes the agent's key, identity, journal and audit in {}.\nType {CONFIRMATION} to go on:",
            dir.display()
        );
        seller_data::erase(&dir, std::io::stdin().lock())?
    };
    for path in &deleted {
        println!("deleted {}", path.display());
    }
    println!("erased: enroll this box again to sell");
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    terms: tokio::signal::unix::Signal,
    interrupts: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terms: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupts: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.terms.recv() => {}
            _ = self.interrupts.recv() => {}
        }
    }
}
