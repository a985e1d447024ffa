//! Assembling and running the control plane: open storage, build the fleet view, the
//! gateway, the allocator and the HTTP app, serve on an already-bound listener until the
//! shutdown token is cancelled. Shutdown: stop accepting (HTTP and agents), let in-flight
//! requests finish for at most `shutdown_grace_s` (their agents are still connected), then
//! close agent sessions with `shutting_down`, stop the background tasks and flush storage.

use crate::allocator::Allocator;
use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::ProbeTarget;
use crate::config::ServerConfig;
use crate::credentials::{CredentialCipher, CredentialError};
use crate::fleet::Fleet;
use crate::gateway::{Gateway, GatewayEvent};
use crate::probe::Prober;
use crate::ratelimit::Limits;
use crate::retention::Retention;
use crate::store::{Role, Store, StoreError};
use crate::tls::ServerTls;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the control plane could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Storage could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The credential key could not be loaded.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The webhook client could not be set up (`[webhooks] ca_file`).
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
    /// The probe echo endpoint could not listen (`[probe] listen`).
    #[error("cannot listen for probes on {addr}: {source}")]
    ProbeListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// PostgreSQL could not be used (`[store] backend = "postgres"`).
    #[error(transparent)]
    Postgres(#[from] crate::store::pg::PgError),
}

/// An opened control plane, ready to serve.
#[derive(Debug)]
pub struct ControlPlane {
    state: AppState,
    events: mpsc::UnboundedReceiver<GatewayEvent>,
    shutdown: CancellationToken,
    tls: Option<ServerTls>,
    retention: Retention,
    prober: Arc<Prober>,
    /// The probe echo endpoint's listener (`[probe] listen`).
    echo: Option<TcpListener>,
}

impl ControlPlane {
    /// Validates `config`, opens storage in `config.data_dir` and builds every part, on
    /// the system clock.
    pub async fn open(config: ServerConfig) -> Result<Self, ServeError> {
        Self::open_with_clock(config, Clock::system()).await
    }

    /// [`ControlPlane::open`] on `clock` (tests drive a manual one).
    pub async fn open_with_clock(config: ServerConfig, clock: Clock) -> Result<Self, ServeError> {
        config.validate()?;
        // Certificate problems are reported before anything is opened.
        let tls = config.tls.as_ref().map(ServerTls::load).transpose()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = open_store(&config).await?;
        let cipher = CredentialCipher::load_or_create(&config.data_dir)?;
        check_shared_key(&store, &cipher).await?;
        let config = Arc::new(config);
        let fleet = Arc::new(Fleet::with_limits(
            config.modem_capacity,
            config.health.limits(),
            clock.clone(),
        ));
        for (imei, owner) in store.modem_owners().await? {
            fleet.set_owner(&imei, &owner);
        }
        let limits = Arc::new(Limits::new(&config, clock.clone()));
        let retention = Retention::new(store.clone(), config.retention.clone(), clock);
        // Sessions watch this token; `serve` cancels it when its own token is cancelled.
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(crate::metrics::PlaneMetrics::with_tls(
            tls.as_ref().map(|tls| tls.reloader.clone()),
        ));
        // Its own cipher instance over the same key file: it seals webhook signing secrets.
        let webhooks = crate::webhooks::Webhooks::new(
            store.clone(),
            CredentialCipher::load_or_create(&config.data_dir)?,
            &config.webhooks,
            metrics.clone(),
        )
        .await?;
        let events = crate::events::Events::new(Arc::new(webhooks.clone()));
        let (gateway, gateway_events) = Gateway::new(
            store.clone(),
            fleet.clone(),
            config.clone(),
            limits.clone(),
            shutdown.clone(),
            metrics.clone(),
        );
        let allocator = Arc::new(
            Allocator::new(
                store.clone(),
                fleet.clone(),
                gateway.clone(),
                cipher,
                config.clone(),
                retention.waker(),
                events.clone(),
            )
            .await?,
        );
        let (echo, target) = probe_listener(&config).await?;
        let prober = Arc::new(Prober::new(
            &config,
            target,
            store.clone(),
            fleet.clone(),
            gateway.clone(),
            allocator.clone(),
            events.clone(),
            metrics.clone(),
        ));
        let state = AppState {
            store,
            fleet,
            gateway,
            allocator,
            config,
            limits,
            metrics,
            events,
            webhooks,
            probing: prober.enabled(),
            console: Arc::default(),
            trends: Arc::default(),
        };
        Ok(ControlPlane {
            state,
            events: gateway_events,
            shutdown,
            tls,
            retention,
            prober,
            echo,
        })
    }

    /// Where the probe echo endpoint listens (`[probe] listen`, its port chosen when 0).
    pub fn probe_echo_addr(&self) -> Option<std::net::SocketAddr> {
        self.echo.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Replaces the served TLS certificate from `[tls]`'s files while serving (`main` calls
    /// it on SIGHUP); `None` without `[tls]`.
    pub fn tls_reloader(&self) -> Option<crate::tls::TlsReloader> {
        self.tls.as_ref().map(|tls| tls.reloader.clone())
    }

    /// The agent gateway (tests hold handshakes with it).
    pub fn gateway(&self) -> Gateway {
        self.state.gateway.clone()
    }

    /// The store (e.g. for creating API keys while serving).
    pub fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Wakes the expiry sweeper so it re-reads every allocation's `expires_at` (after an
    /// expiry was changed directly in the store, e.g. by a test or a maintenance tool).
    pub fn expiry_waker(&self) -> Arc<tokio::sync::Notify> {
        self.state.allocator.expiry_waker()
    }

    /// What the expiry sweeper has done (tests that move a manual clock wait on it).
    pub fn expiry_sweeps(&self) -> Arc<crate::clock::Sweeps> {
        self.state.allocator.expiry_sweeps()
    }

    /// What the outage sweeper has done (`found`: moves started).
    pub fn outage_sweeps(&self) -> Arc<crate::clock::Sweeps> {
        self.state.allocator.outage_sweeps()
    }

    /// Wakes the outage sweeper so it scans now (tests that move a manual clock).
    pub fn outage_waker(&self) -> Arc<tokio::sync::Notify> {
        self.state.allocator.outage_waker()
    }

    /// Creates an API key; returns the key, which is not stored.
    pub async fn create_key(&self, role: Role, name: &str) -> Result<String, StoreError> {
        self.state.store.create_key(role, name).await
    }

    /// Serves HTTP and agent WebSockets on `listener` until `shutdown` is cancelled, then
    /// closes every agent session (`shutting_down`), waits for them and flushes storage.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let ControlPlane {
            state,
            events,
            shutdown: sessions,
            tls,
            retention,
            prober,
            echo,
        } = self;
        let app = api::router(state.clone());
        // A convenience (the CLI while the plane runs): without it the plane still serves.
        let local_admin = match crate::local_admin::bind(&state.config.data_dir) {
            Ok(local) => Some(tokio::spawn(crate::http_server::serve_local(
                local,
                crate::local_admin::app(app.clone()),
                state.config.http.header_timeout(),
                sessions.clone(),
            ))),
            Err(e) => {
                warn!(error = %e, "no local admin socket: the CLI cannot manage keys while the plane runs");
                None
            }
        };
        log_listening(&listener, tls.as_ref());
        check_open_files(state.config.http.max_connections);
        let worker = tokio::spawn(state.allocator.clone().run_events(events, sessions.clone()));
        let sweeper = tokio::spawn(retention.run(sessions.clone()));
        let expiry = tokio::spawn(state.allocator.clone().run_expiry(sessions.clone()));
        let outages = tokio::spawn(state.allocator.clone().run_replacement(sessions.clone()));
        let deliverer = tokio::spawn(state.webhooks.clone().run(sessions.clone()));
        let leases = tokio::spawn(state.gateway.clone().run_leases(sessions.clone()));
        let cluster = tokio::spawn(state.gateway.clone().run_cluster(sessions.clone()));
        let mirror = tokio::spawn(state.gateway.clone().run_mirror(sessions.clone()));
        let probes = tokio::spawn(prober.run(sessions.clone()));
        let quality = tokio::spawn(
            state
                .allocator
                .quality()
                .run(state.fleet.clock().clone(), sessions.clone()),
        );
        let trends = tokio::spawn(api::console::trend::run(state.clone(), sessions.clone()));
        let echo = echo.map(|listener| {
            let metrics = state.metrics.clone();
            tokio::spawn(crate::probe::echo::serve(
                listener,
                metrics,
                sessions.clone(),
            ))
        });
        let store = state.store.clone();
        let sweep_lock = tokio::spawn({
            let stop = sessions.clone();
            async move { store.run_sweep_lock(stop).await }
        });
        let warnings = tokio::spawn(state.allocator.clone().run_expiring(sessions.clone()));
        let release_retries = tokio::spawn(
            state
                .allocator
                .clone()
                .run_release_retries(sessions.clone()),
        );
        let stop = shutdown.clone();
        let gateway = state.gateway.clone();
        let stopped = async move {
            stop.cancelled().await;
            // Sessions stay up until in-flight requests are done: those may be waiting for
            // an agent's answer. Upgraded sockets are ended explicitly afterwards.
            gateway.stop_accepting();
        };
        let grace = state.config.shutdown_grace();
        let http_stop = CancellationToken::new();
        let guard = http_stop.clone();
        tokio::spawn(async move {
            stopped.await;
            guard.cancel();
        });
        let serving =
            crate::http_server::serve(listener, app, tls, (&state.config.http).into(), http_stop);
        let served = within_grace(serving, &shutdown, grace).await;
        sessions.cancel();
        state.gateway.drain().await;
        let _ = worker.await;
        let _ = sweeper.await;
        let _ = expiry.await;
        let _ = outages.await;
        let _ = deliverer.await;
        let _ = leases.await;
        let _ = cluster.await;
        let _ = mirror.await;
        let _ = sweep_lock.await;
        let _ = warnings.await;
        let _ = release_retries.await;
        let _ = probes.await;
        let _ = quality.await;
        let _ = trends.await;
        if let Some(echo) = echo {
            let _ = echo.await;
        }
        if let Some(local_admin) = local_admin {
            let _ = local_admin.await;
        }
        let _ = std::fs::remove_file(crate::local_admin::socket_path(&state.config.data_dir));
        state.allocator.finish(grace).await;
        // After every task that counts (probes, rotations, moves) has stopped.
        if let Err(e) = state.allocator.quality().save().await {
            warn!("quality: the last counts could not be written: {e}");
        }
        state.store.durable().await?;
        info!("control plane stopped");
        Ok(served?)
    }
}

/// On PostgreSQL, every node must seal with the same credential key: the first node
/// stores a value sealed with its key, and a node whose key cannot open it refuses to
/// start (copy `credentials.key` from a running node).
async fn check_shared_key(store: &Store, cipher: &CredentialCipher) -> Result<(), ServeError> {
    const NAME: &str = "credentials_check";
    let Store::Postgres(pg) = store else {
        return Ok(());
    };
    let proposed = cipher.seal(&farmhand_protocol::Secret::new(NAME), NAME);
    let agreed = pg.agreed_setting(NAME, &proposed).await?;
    match cipher.open(&agreed, NAME) {
        Ok(_) => Ok(()),
        Err(_) => Err(ServeError::Config(crate::config::ConfigError::Invalid(
            "credentials.key in this node's data_dir is not the key the other nodes of this \
             database use: copy theirs (the buyer passwords and webhook secrets in the \
             database are sealed with it)"
                .into(),
        ))),
    }
}

/// The probe echo endpoint's listener (with `[probe] listen`) and what probes fetch (with
/// `[probe] enabled`).
async fn probe_listener(
    config: &ServerConfig,
) -> Result<(Option<TcpListener>, Option<ProbeTarget>), ServeError> {
    let echo = match config.probe.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::ProbeListen { addr, source })?,
        ),
        None => None,
    };
    let bound = echo.as_ref().and_then(|l| l.local_addr().ok());
    let target = match config.probe.enabled {
        true => Some(config.probe.target(bound)?),
        false => None,
    };
    Ok((echo, target))
}

/// The store `config` names: sled in `data_dir`, or PostgreSQL, migrated (under the
/// migrations' lock: nodes may start together).
async fn open_store(config: &ServerConfig) -> Result<Store, ServeError> {
    match config.store.backend {
        crate::config::Backend::Sled => Ok(Store::open(&config.data_dir)?),
        crate::config::Backend::Postgres => {
            let pool = crate::store::pg::connect(&config.store).await?;
            let migrated = crate::store::pg::migrations::migrate(&pool).await?;
            if migrated.from != migrated.to {
                info!(
                    from = migrated.from,
                    to = migrated.to,
                    "migrated the database schema"
                );
            }
            info!(schema_version = migrated.to, "serving from PostgreSQL");
            Ok(Store::Postgres(crate::store::pg::PgStore::new(pool)))
        }
    }
}

/// Runs `serving` until it ends, or until `grace` after `shutdown` was cancelled: a request
/// that would outlive the grace period is abandoned (everything it confirmed is on disk).
async fn within_grace<F>(
    serving: F,
    shutdown: &CancellationToken,
    grace: std::time::Duration,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serving => served,
        () = deadline => {
            warn!("in-flight requests did not finish within {} s: stopping anyway", grace.as_secs());
            Ok(())
        }
    }
}

/// Raises the open-file limit; warns when connections would run out of descriptors before
/// `[http] max_connections` can refuse them (agents' sessions and storage need some too).
fn check_open_files(max_connections: usize) {
    const HEADROOM: u64 = 256;
    if let Some(files) = crate::fd_limit::raise() {
        let wanted = max_connections as u64 + HEADROOM;
        if files < wanted {
            warn!(open_files = files, max_connections, "the open-file limit is below [http] max_connections + {HEADROOM}: raise it (LimitNOFILE=, ulimit -n) or lower max_connections");
        }
    }
}

/// Logs the address and scheme; serving plain HTTP beyond loopback deserves a warning.
fn log_listening(listener: &TcpListener, tls: Option<&ServerTls>) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    match tls {
        Some(tls) => {
            let served = tls.reloader.current();
            info!(certificate = %served.fingerprint, not_after = %served.expires(), "listening on https://{addr}");
            if served.expired() {
                warn!(not_after = %served.expires(), "the TLS certificate has expired: agents that check expiry refuse it");
            }
        }
        None if addr.ip().is_loopback() => info!("listening on http://{addr}"),
        None => warn!(
            "listening on http://{addr} WITHOUT TLS on a non-loopback address: agent sessions, \
             API keys and buyer credentials cross the network in clear; set [tls]"
        ),
    }
}

/// Opens the control plane from `config` and serves on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    ControlPlane::open(config)
        .await?
        .serve(listener, shutdown)
        .await
}
