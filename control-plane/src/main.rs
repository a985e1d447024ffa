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
    /// Create or upgrade the PostgreSQL schema of `[store]` (backend = "postgres"): applies
    /// every migration this release has that the database lacks, under a lock (safe to run
    /// from several nodes at once), and prints the schema version.
    Migrate {
        /// TOML config file (see config/control.example.toml); FARMHAND_STORE_URL etc.
        /// apply over it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Change nothing: print the database's schema version against this release's and
        /// exit 0 when they match, 1 when migrations are pending, 2 when the database is
        /// newer (for deploy scripts and health checks).
        #[arg(long)]
        check: bool,
    },
    /// Print the REST API's OpenAPI 3.1 document (what GET /v1/openapi.json serves), or
    /// write it to a file (docs/openapi.json is written this way).
    Openapi {
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Storage backends.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Manage API keys: on the database while the plane is stopped, through its local
    /// admin socket (<data_dir>/admin.sock) while it runs.
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
enum StoreCommand {
    /// Copy every table of a stopped plane's sled store into PostgreSQL (migrating its
    /// schema first), verified by row counts and checksums, in one transaction. Refuses a
    /// database that holds anything unless --replace.
    Copy {
        /// The stopped plane's data directory (its sled store is <DIR>/db).
        #[arg(long)]
        from: PathBuf,
        /// postgres://user:password@host:port/database (default: FARMHAND_STORE_URL).
        #[arg(long, env = "FARMHAND_STORE_URL", hide_env_values = true)]
        to: String,
        /// TLS to PostgreSQL: verify-full (default) or disable.
        #[arg(long, default_value = "verify-full")]
        tls: String,
        /// PEM file of CAs PostgreSQL's certificate may chain to.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Empty the target first (its rows are lost).
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (once) on stdout.
    Create {
        /// Data directory of the control plane (default: the config's `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file: with `[store] backend = "postgres"` the key is written to
        /// the database directly (FARMHAND_STORE_* apply over it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// admin, marketplace or seller.
        #[arg(long)]
        role: Role,
        /// Who the key is for.
        #[arg(long)]
        name: String,
        /// Marketplace keys: the tenant the key acts for (default: `default`).
        #[arg(long)]
        tenant: Option<String>,
        /// Seller keys (required): the label of the seller's enrollment tokens, whose boxes
        /// the key sees.
        #[arg(long)]
        seller: Option<String>,
        /// The key stops working after this many days (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (id, role, name, tenant or `seller:LABEL`, created, last used, expiry;
    /// never the key).
    List {
        /// Data directory of the control plane (default: the config's `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file (see `keys create`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Revoke a key by its id (`keys list`): its next request gets 401.
    Revoke {
        /// Data directory of the control plane (default: the config's `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file (see `keys create`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The key's id, `key_…`.
        key_id: String,
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
        Command::Migrate { config, check } => migrate(config, check),
        Command::Openapi { out } => {
            let doc = farmhand_control::api::openapi::json();
            match out {
                None => print!("{doc}"),
                Some(path) => std::fs::write(&path, doc)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            }
            Ok(())
        }
        Command::Store {
            command:
                StoreCommand::Copy {
                    from,
                    to,
                    tls,
                    ca_file,
                    replace,
                },
        } => store_copy(&from, to, &tls, ca_file, replace),
        Command::Keys { command } => keys(command),
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

/// `keys …`: on the database when the plane is stopped, else through its admin socket.
/// Where `keys` works: the PostgreSQL database of `[store]` (directly: nodes may run
/// meanwhile), else sled in the data directory while the plane is stopped (`None` while it
/// runs: then through its local admin socket in that directory).
fn keys_store(
    runtime: &tokio::runtime::Runtime,
    data_dir: Option<PathBuf>,
    file: Option<PathBuf>,
) -> Result<(PathBuf, Option<farmhand_control::Store>)> {
    use farmhand_control::config::Backend;
    use farmhand_control::store::pg;
    let config = farmhand_control::config::env::load(file.as_deref(), std::env::vars_os())
        .context("loading the configuration")?;
    let data_dir = data_dir.unwrap_or(config.data_dir);
    if config.store.backend == Backend::Sled {
        let context = || format!("cannot open the store in {}", data_dir.display());
        let store = farmhand_control::keys::open_offline(&data_dir).with_context(context)?;
        return Ok((data_dir, store));
    }
    let store = runtime.block_on(async {
        let pool = pg::connect(&config.store)
            .await
            .context("connecting to PostgreSQL")?;
        pg::migrations::migrate(&pool)
            .await
            .context("migrating the schema")?;
        anyhow::Ok(farmhand_control::Store::Postgres(pg::PgStore::new(pool)))
    })?;
    Ok((data_dir, Some(store)))
}

fn keys(command: KeysCommand) -> Result<()> {
    use farmhand_control::keys::KeySpec;
    use farmhand_control::local_admin::call;
    use reqwest::Method;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    match command {
        KeysCommand::Create {
            data_dir,
            config,
            role,
            name,
            tenant,
            seller,
            expires_in_days,
        } => {
            let now = time::OffsetDateTime::now_utc();
            let spec = KeySpec {
                role,
                name,
                tenant,
                seller,
                expires_at: expires_in_days.map(|d| now + time::Duration::days(i64::from(d))),
            };
            if let Some(problem) = spec.problem(now) {
                anyhow::bail!("{problem}");
            }
            let (data_dir, store) = keys_store(&runtime, data_dir, config)?;
            let context = || format!("cannot create a key in {}", data_dir.display());
            let key = match store {
                Some(store) => {
                    runtime
                        .block_on(store.issue_key(&spec, "cli"))
                        .with_context(context)?
                        .0
                }
                None => {
                    let mut body = serde_json::json!({
                        "role": spec.role, "name": spec.name,
                        "expires_at": spec.expires_at.map(farmhand_control::ids::rfc3339),
                    });
                    if let Some(tenant) = &spec.tenant {
                        body["tenant"] = serde_json::json!(tenant);
                    }
                    if let Some(seller) = &spec.seller {
                        body["seller"] = serde_json::json!(seller);
                    }
                    let created = runtime
                        .block_on(call(&data_dir, Method::POST, "/v1/keys", Some(body)))
                        .with_context(context)?;
                    created["key"]
                        .as_str()
                        .context("the plane's answer holds no key")?
                        .to_owned()
                }
            };
            println!("{key}");
        }
        KeysCommand::List { data_dir, config } => {
            let (data_dir, store) = keys_store(&runtime, data_dir, config)?;
            let context = || format!("cannot list the keys in {}", data_dir.display());
            let keys: Vec<serde_json::Value> = match store {
                Some(store) => runtime
                    .block_on(store.api_keys())
                    .with_context(context)?
                    .iter()
                    .map(|k| {
                        serde_json::to_value(farmhand_control::keys::KeyView::from(k))
                            .unwrap_or_default()
                    })
                    .collect(),
                None => runtime
                    .block_on(call(&data_dir, Method::GET, "/v1/keys", None))
                    .with_context(context)?["keys"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            };
            println!("KEY_ID\tROLE\tNAME\tTENANT\tCREATED\tLAST_USED\tEXPIRES");
            let cell = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
            for k in &keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    cell(&k["key_id"]),
                    cell(&k["role"]),
                    cell(&k["name"]),
                    match k["seller"].as_str() {
                        Some(seller) => format!("seller:{seller}"),
                        None => cell(&k["tenant"]),
                    },
                    cell(&k["created_at"]),
                    cell(&k["last_used_at"]),
                    cell(&k["expires_at"])
                );
            }
        }
        KeysCommand::Revoke {
            data_dir,
            config,
            key_id,
        } => {
            let (data_dir, store) = keys_store(&runtime, data_dir, config)?;
            let context = || format!("cannot revoke {key_id} in {}", data_dir.display());
            match store {
                Some(store) => {
                    if !runtime
                        .block_on(farmhand_control::keys::revoke(&store, &key_id, "cli"))
                        .with_context(context)?
                    {
                        anyhow::bail!("no key {key_id:?} in {}", data_dir.display());
                    }
                }
                None => {
                    let path = format!("/v1/keys/{key_id}");
                    runtime
                        .block_on(call(&data_dir, Method::DELETE, &path, None))
                        .with_context(context)?;
                }
            }
            eprintln!("revoked {key_id}");
        }
    }
    Ok(())
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
    let mut config = farmhand_control::config::env::load(file.as_deref(), std::env::vars_os())
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

fn store_copy(
    from: &std::path::Path,
    url: String,
    tls: &str,
    ca_file: Option<PathBuf>,
    replace: bool,
) -> Result<()> {
    use farmhand_control::config::{PgTls, StoreConfig};
    let tls = match tls {
        "verify-full" => PgTls::VerifyFull,
        "disable" => PgTls::Disable,
        other => anyhow::bail!("--tls must be verify-full or disable, not {other:?}"),
    };
    let target = StoreConfig {
        ca_file,
        ..StoreConfig::postgres(url, tls)
    };
    let store = farmhand_control::SledStore::open(from)
        .with_context(|| format!("opening the sled store in {}", from.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let copied = runtime.block_on(async {
        let pool = farmhand_control::store::pg::connect(&target)
            .await
            .context("connecting to PostgreSQL")?;
        farmhand_control::store::pg::copy::copy(&store, &pool, replace)
            .await
            .context("copying")
    })?;
    for table in &copied {
        println!(
            "{:<20} {:>9} rows  sha256:{}",
            table.table, table.rows, table.checksum
        );
    }
    println!("copied and verified: {} tables", copied.len());
    Ok(())
}

fn migrate(file: Option<PathBuf>, check: bool) -> Result<()> {
    use farmhand_control::config::Backend;
    use farmhand_control::store::pg;
    let config = farmhand_control::config::env::load(file.as_deref(), std::env::vars_os())
        .context("loading the configuration")?;
    anyhow::ensure!(
        config.store.backend == Backend::Postgres,
        "migrate needs [store] backend = \"postgres\" (sled needs no migration)"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(async {
        let pool = pg::connect(&config.store)
            .await
            .context("connecting to PostgreSQL")?;
        if check {
            let found = pg::migrations::schema_version(&pool)
                .await
                .context("reading the schema version")?;
            let wanted = pg::migrations::latest();
            println!("schema version {found}; this release's {wanted}");
            let code = match found.cmp(&wanted) {
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Less => {
                    println!("migrations pending: run `farmhand-control migrate`");
                    1
                }
                std::cmp::Ordering::Greater => {
                    println!("the database is newer than this release: upgrade this node");
                    2
                }
            };
            // Flush what was printed before exiting with the verdict.
            if code != 0 {
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::process::exit(code);
            }
            return Ok(());
        }
        let done = pg::migrations::migrate(&pool)
            .await
            .context("migrating the schema")?;
        if done.from == done.to {
            println!("schema version {}: up to date", done.to);
        } else {
            println!("schema version {} → {}", done.from, done.to);
        }
        Ok(())
    })
}

async fn run(config: ServerConfig) -> Result<()> {
    // First: the default actions of SIGHUP, SIGTERM and SIGINT end the process, and a
    // `systemctl reload` or stop may come as soon as the plane says it listens.
    let hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let terms = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let interrupts = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let addr = config.listen;
    let limit = config.shutdown_grace() + DRAIN_PERIOD;
    let plane = ControlPlane::open(config)
        .await
        .context("opening the control plane")?;
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
