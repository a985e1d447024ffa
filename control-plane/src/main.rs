//! `farmhand-control`: parses the command line, loads the config, installs tracing, binds
//! the listener and runs the library; only this file listens for signals (SIGTERM and
//! Ctrl-C stop, SIGHUP reloads the TLS certificate).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use farmhand_control::tls::TlsReloader;
use farmhand_control::{ControlPlane, Role, ServerConfig};
use farmhand_ops::logging::{self, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// How long closing agent sessions and flushing storage may take after the configured
/// `shutdown_grace_s` (the library bounds in-flight requests by that itself).
const DRAIN_PERIOD: Duration = Duration::from_secs(10);

/// What `--version` prints: the package version and the git commit (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FARMHAND_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "farmhand-control", version = VERSION, about = "Farmhand control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text (default) or json (one object per line, for collectors).
    /// Overrides `[log] format`.
    #[arg(long, global = true, env = "FARMHAND_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST API and the agent gateway.
    Serve {
        /// Address to listen on (overrides `listen` in the config file).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory (overrides `data_dir` in the config file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file (see config/control.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage API keys (only while the control plane is stopped).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// TLS helpers.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Buyer-credential key management (only while the control plane is stopped).
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// Replace <data_dir>/credentials.key with a new key and re-seal every stored buyer
    /// password under it (safe to re-run after an interruption).
    RotateKey {
        /// Data directory of the control plane.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TlsCommand {
    /// Write a self-signed cert.pem (0644) and key.pem (0600) into DIR for a first run and
    /// print the certificate's fingerprint (`sha256:HEX`, for the agents' `pin_sha256`).
    SelfSigned {
        /// Directory to write into (created if missing; existing files are not overwritten).
        #[arg(long)]
        out: PathBuf,
        /// DNS name or IP address the certificate is for (repeatable; default localhost
        /// and 127.0.0.1).
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (once) on stdout.
    Create {
        /// Data directory of the control plane.
        #[arg(long)]
        data_dir: PathBuf,
        /// admin or marketplace.
        #[arg(long)]
        role: Role,
        /// Who the key is for.
        #[arg(long)]
        name: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        // `serve` installs logging once its config (level, format) is loaded.
        logging::install(cli.log_format.unwrap_or_default(), None).map_err(anyhow::Error::msg)?;
    }
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            config,
        } => serve(listen, data_dir, config, cli.log_format),
        Command::Keys {
            command:
                KeysCommand::Create {
                    data_dir,
                    role,
                    name,
                },
        } => {
            let key = farmhand_control::create_key(&data_dir, role, &name)
                .with_context(|| format!("cannot create a key in {}", data_dir.display()))?;
            println!("{key}");
            Ok(())
        }
        Command::Tls {
            command: TlsCommand::SelfSigned { out, names },
        } => self_signed(&out, &names),
        Command::Credentials {
            command: CredentialsCommand::RotateKey { data_dir },
        } => {
            let count = farmhand_control::rekey::rotate_credential_key(&data_dir)
                .with_context(|| format!("cannot rotate the key in {}", data_dir.display()))?;
            eprintln!("credential key rotated; {count} buyer passwords sealed again");
            Ok(())
        }
    }
}

/// `tls self-signed`: the fingerprint alone on stdout (for scripts), the rest on stderr.
fn self_signed(out: &std::path::Path, names: &[String]) -> Result<()> {
    let files = farmhand_control::tls::write_self_signed(out, names).with_context(|| {
        format!(
            "cannot write a self-signed certificate into {}",
            out.display()
        )
    })?;
    eprintln!(
        "wrote {} and {}; set [tls] cert_file and key_file to them, and pin_sha256 in each agent's [control_plane]:",
        files.cert_file.display(),
        files.key_file.display()
    );
    println!("{}", files.fingerprint);
    Ok(())
}

fn serve(
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    file: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<()> {
    // The file (or the defaults), then the FARMHAND_* variables, then the flags.
    let mut config = farmhand_control::env::load(file.as_deref(), std::env::vars_os())
        .with_context(|| match &file {
            Some(path) => format!("loading {}", path.display()),
            None => "loading the configuration (defaults and FARMHAND_* variables)".into(),
        })?;
    let format = log_format.unwrap_or(config.log.format);
    logging::install(format, Some(&config.log.level)).map_err(anyhow::Error::msg)?;
    config.listen = listen.unwrap_or(config.listen);
    config.data_dir = data_dir.unwrap_or(config.data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(run(config))
}

async fn run(config: ServerConfig) -> Result<()> {
    // First: the default actions of SIGHUP, SIGTERM and SIGINT end the process, and a
    // `systemctl reload` or stop may come as soon as the plane says it listens.
    let hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let terms = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let interrupts = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let addr = config.listen;
    let limit = config.shutdown_grace() + DRAIN_PERIOD;
    let plane = ControlPlane::open(config).context("opening the control plane")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(reload_on_hangup(
        hangups,
        plane.tls_reloader(),
        shutdown.clone(),
    ));
    let mut server = tokio::spawn(plane.serve(listener, shutdown.clone()));
    tokio::select! {
        result = &mut server => return result.context("server task")?.context("serving"),
        () = shutdown_signal(terms, interrupts) => tracing::info!("shutdown requested"),
    }
    shutdown.cancel();
    match tokio::time::timeout(limit, server).await {
        Ok(result) => result.context("server task")?.context("serving"),
        Err(_) => anyhow::bail!("shutdown did not finish within {} s", limit.as_secs()),
    }
}

/// SIGHUP (`systemctl reload farmhand-control`): re-reads `[tls] cert_file` and `key_file`
/// for new connections; `reload` logs the outcome, and a refused pair leaves the previous
/// certificate in service. Without `[tls]` there is nothing to reload, but the signal is
/// still caught so that it does not end the process.
async fn reload_on_hangup(
    mut hangups: Signal,
    tls: Option<TlsReloader>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        let Some(tls) = tls.clone() else {
            tracing::warn!("SIGHUP: nothing to reload without [tls]");
            continue;
        };
        // Two small files, but blocking reads all the same: off the async workers.
        if let Err(e) = tokio::task::spawn_blocking(move || tls.reload()).await {
            tracing::error!(error = %e, "the TLS reload task failed");
        }
    }
}

/// Ctrl-C or SIGTERM (their handlers are installed before the plane starts).
async fn shutdown_signal(mut terms: Signal, mut interrupts: Signal) {
    tokio::select! {
        _ = terms.recv() => {}
        _ = interrupts.recv() => {}
    }
}
