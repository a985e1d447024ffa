//! The whole Farmhand stack in one process, on 127.0.0.1:0: a ProxySmart simulator, a control
//! plane with an admin and a marketplace key, and an enrolled agent — what the end-to-end
//! tests and the demo are built on.

use super::api::Api;
use super::pki::PlaneTls;
use super::within;
use crate::sim::{self, SimConfig, SimHandle};
use anyhow::Context;
use farmhand_agent::config::pin::Pin;
use farmhand_agent::plane::tls::Trust;
use farmhand_agent::{AgentConfig, AgentStatus, ControlPlaneConfig, Masked, ProxysmartConfig};
use farmhand_control::config::{PgTls, StoreConfig, TlsConfig};
use farmhand_control::{ControlPlane, Role, ServerConfig};
use farmhand_protocol::Site;
use farmhand_test_support::postgres::PgCluster;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `[webhooks] allow_private_targets` of every plane the harness starts (in process and as
/// a process): webhook receivers run on loopback, which a plane refuses by default.
pub const LOOPBACK_TARGETS: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Simulated modems.
    pub modems: usize,
    /// The ProxySmart admin password (tests use a unique canary).
    pub proxysmart_password: String,
    /// Seconds between the agent's ProxySmart polls.
    pub poll_interval: Duration,
    /// How long the simulator shows `IP_RESET` before the new IP.
    pub rotation_delay: Duration,
    /// The control plane's provisioning timeout, seconds.
    pub provisioning_timeout_s: u64,
    /// Connect the agent through this base URL instead of the plane's (e.g. a recording relay).
    pub agent_server_url: Option<String>,
    /// Plain HTTP (the default) or HTTPS/WSS with generated certificates.
    pub tls: StackTls,
    /// The agent's local `[policy]` (default: everything allowed). Excluded IMEIs are not
    /// counted among the modems `start` waits for.
    pub agent_policy: farmhand_agent::config::policy::Policy,
    /// The control plane's heartbeat interval, seconds (a peer silent for 3 is dead).
    pub heartbeat_interval_s: u64,
    /// The simulated box's zone, seconds east of UTC (its `CREATED_AT` is local time).
    pub box_utc_offset_s: i32,
    /// Applied to the control plane's config last (e.g. `|c| c.replacement_grace_s = 2`).
    pub configure_plane: fn(&mut ServerConfig),
    /// How often the agent reads and reports traffic counters (`[usage] interval_s`).
    pub usage_interval: Duration,
    /// How the simulated box departs from the classic API (see `docs/simulator.md`). The
    /// default is the classic box, or — with `PROXYSMART_SIM_PROFILE=field` in the
    /// environment — the `field` box, which is how CI runs the lifecycle suite once more.
    pub quirks: sim::Quirks,
}

/// The simulator profile the environment asks for (`PROXYSMART_SIM_PROFILE`: `classic`, the
/// default, or `field`).
pub fn quirks_from_env() -> sim::Quirks {
    match std::env::var("PROXYSMART_SIM_PROFILE").as_deref() {
        Ok("field") => sim::Quirks::field(),
        _ => sim::Quirks::default(),
    }
}

/// How the stack's control plane serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StackTls {
    /// Plain HTTP; the agent runs with `insecure_plaintext = true`.
    #[default]
    Off,
    /// HTTPS with a certificate from a test CA; the agent trusts it through `ca_file`.
    Ca,
    /// HTTPS with `tls self-signed`'s certificate; the agent pins its fingerprint.
    SelfSignedPin,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            modems: 4,
            proxysmart_password: "proxy".into(),
            poll_interval: Duration::from_secs(1),
            rotation_delay: Duration::from_millis(300),
            provisioning_timeout_s: 10,
            agent_server_url: None,
            tls: StackTls::Off,
            agent_policy: farmhand_agent::config::policy::Policy::default(),
            heartbeat_interval_s: ServerConfig::default().heartbeat_interval_s,
            box_utc_offset_s: 0,
            configure_plane: |_| {},
            usage_interval: Duration::from_secs(1),
            quirks: quirks_from_env(),
        }
    }
}

/// A running stack. Dropping it stops everything.
#[derive(Debug)]
pub struct Stack {
    /// The simulated ProxySmart box.
    pub sim: SimHandle,
    /// `http://127.0.0.1:PORT` of the control plane.
    pub plane_url: String,
    /// REST client with the admin key.
    pub admin: Api,
    /// REST client with the marketplace key.
    pub market: Api,
    /// The admin key.
    pub admin_key: String,
    /// The marketplace key.
    pub market_key: String,
    /// The enrolled agent's id.
    pub agent_id: String,
    /// The control plane's data directory.
    pub plane_dir: TempDir,
    /// The agent's state directory.
    pub agent_dir: TempDir,
    /// The plane's certificate files, when it serves HTTPS.
    pub plane_tls: Option<PlaneTls>,
    /// The plane's PostgreSQL, with `FARMHAND_TEST_STORE=postgres` ([`test_store`]).
    pub database: Option<PgCluster>,
    agent_config: AgentConfig,
    agent_status: Arc<AgentStatus>,
    agent: Option<(CancellationToken, JoinHandle<()>)>,
    stop: CancellationToken,
}

impl Stack {
    /// Starts everything with `options` and waits until the agent's modems are visible
    /// through the REST API.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        farmhand_agent::install_crypto_provider();
        let stop = CancellationToken::new();
        let sim = start_sim(&options, &stop).await?;

        let plane_dir = tempfile::tempdir()?;
        let plane_tls = match options.tls {
            StackTls::Off => None,
            StackTls::Ca => Some(PlaneTls::ca_signed(&plane_dir.path().join("tls"))?),
            StackTls::SelfSignedPin => Some(PlaneTls::self_signed(&plane_dir.path().join("tls"))?),
        };
        let mut config = ServerConfig {
            data_dir: plane_dir.path().join("data"),
            provisioning_timeout_s: options.provisioning_timeout_s,
            heartbeat_interval_s: options.heartbeat_interval_s,
            tls: plane_tls
                .as_ref()
                .map(|t| TlsConfig::new(&t.cert_file, &t.key_file)),
            ..ServerConfig::default()
        };
        // Webhook receivers of tests and the demo run on 127.0.0.1: the harness allows
        // loopback targets (a plane's default refuses them); `configure_plane` may change it.
        config.webhooks.allow_private_targets = LOOPBACK_TARGETS.map(String::from).to_vec();
        (options.configure_plane)(&mut config);
        let database = test_store(&mut config)?;
        let plane = ControlPlane::open(config)
            .await
            .context("opening the control plane")?;
        let admin_key = plane.create_key(Role::Admin, "harness-admin").await?;
        let market_key = plane.create_key(Role::Marketplace, "harness-shop").await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let scheme = if plane_tls.is_some() { "https" } else { "http" };
        let plane_url = format!("{scheme}://{}", listener.local_addr()?);
        let control_plane = control_plane_settings(&plane_url, plane_tls.as_ref());
        let http = api_client(&control_plane)?;
        let plane_stop = stop.child_token();
        tokio::spawn(async move {
            if let Err(e) = plane.serve(listener, plane_stop).await {
                tracing::error!(error = %e, "control plane stopped with an error");
            }
        });
        let admin = Api::with_client(&plane_url, Some(&admin_key), http.clone());
        let market = Api::with_client(&plane_url, Some(&market_key), http);

        let agent_dir = tempfile::tempdir()?;
        let token = admin
            .post(
                "/v1/enrollment-tokens",
                json!({"label": "harness-seller", "ttl_s": 600}),
            )
            .await?;
        let token = token
            .str("/token")
            .context("no enrollment token in reply")?
            .to_owned();
        let agent_id = farmhand_agent::enroll(&control_plane, &token, agent_dir.path()).await?;
        let agent_config = AgentConfig {
            state_dir: agent_dir.path().to_path_buf(),
            control_plane: ControlPlaneConfig {
                url: options
                    .agent_server_url
                    .clone()
                    .unwrap_or(plane_url.clone()),
                ..control_plane
            },
            proxysmart: ProxysmartConfig {
                poll_interval: options.poll_interval,
                ..ProxysmartConfig::new(
                    sim.base_url(),
                    "proxy",
                    Masked::new(options.proxysmart_password.clone()),
                )
            },
            site: Site {
                public_host: "127.0.0.1".into(),
                country: "DE".into(),
                city: Some("Berlin".into()),
            },
            policy: options.agent_policy.clone(),
            // On 127.0.0.1:0; the bound address is in `agent_status().metrics_addr()`.
            metrics: farmhand_agent::config::MetricsConfig {
                listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                allow_non_loopback: false,
            },
            log: Default::default(),
            usage: farmhand_agent::config::UsageConfig {
                interval: options.usage_interval,
            },
            // Measured every second, so a test sees a box's health change at once.
            health: farmhand_agent::config::HealthConfig {
                interval: Duration::from_secs(1),
                ..Default::default()
            },
        };
        // The agent refuses a config it cannot run with; say so here, not as an agent that
        // never connects.
        agent_config
            .validate()
            .context("the agent would refuse this config")?;
        let mut stack = Stack {
            sim,
            plane_url,
            database,
            admin,
            market,
            admin_key,
            market_key,
            agent_id,
            plane_dir,
            agent_dir,
            plane_tls,
            agent_config,
            agent_status: Arc::new(AgentStatus::new()),
            agent: None,
            stop,
        };
        stack.start_agent();
        let excluded = options.agent_policy.excluded_imeis.len();
        stack
            .wait_for_modems(options.modems.saturating_sub(excluded))
            .await?;
        Ok(stack)
    }

    /// Points the agent at another control-plane URL (e.g. a relay) from its next start.
    pub fn set_agent_server_url(&mut self, url: &str) {
        self.agent_config.control_plane.url = url.to_owned();
    }

    /// The agent's control-plane settings (URL, TLS trust), applied from its next start.
    pub fn agent_control_plane(&mut self) -> &mut ControlPlaneConfig {
        &mut self.agent_config.control_plane
    }

    /// The agent's ProxySmart settings (timeouts, zone), applied from its next start.
    pub fn agent_proxysmart(&mut self) -> &mut ProxysmartConfig {
        &mut self.agent_config.proxysmart
    }

    /// A copy of the agent's configuration (e.g. to run an agent by hand).
    pub fn agent_config(&self) -> AgentConfig {
        self.agent_config.clone()
    }

    /// Whether the agent task is still running (it retries forever unless stopped).
    pub fn agent_running(&self) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|(_, task)| !task.is_finished())
    }

    /// The running agent's live status (a fresh one for each start).
    pub fn agent_status(&self) -> Arc<AgentStatus> {
        self.agent_status.clone()
    }

    /// Starts the agent (again) in-process.
    pub fn start_agent(&mut self) {
        let token = self.stop.child_token();
        let config = self.agent_config.clone();
        let run_token = token.clone();
        self.agent_status = Arc::new(AgentStatus::new());
        let status = self.agent_status.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = farmhand_agent::run_with_status(config, run_token, status).await {
                tracing::error!(error = %e, "agent stopped with an error");
            }
        });
        self.agent = Some((token, task));
    }

    /// Stops the agent and waits until it has shut down.
    pub async fn stop_agent(&mut self) {
        if let Some((token, task)) = self.agent.take() {
            token.cancel();
            let _ = task.await;
        }
    }

    /// Waits until `GET /v1/modems` lists `count` modems.
    pub async fn wait_for_modems(&self, count: usize) -> anyhow::Result<Vec<Value>> {
        within(
            Duration::from_secs(15),
            "the agent's modems in GET /v1/modems",
            || async {
                let reply = self.market.get("/v1/modems").await.ok()?;
                let modems = reply.body.get("modems")?.as_array()?.clone();
                (modems.len() == count).then_some(modems)
            },
        )
        .await
        .map_err(Into::into)
    }

    /// Waits until every modem is available for a new allocation.
    pub async fn wait_until_available(&self, count: usize) -> anyhow::Result<()> {
        within(
            Duration::from_secs(15),
            "modems available for allocation",
            || async {
                let reply = self.market.get("/v1/modems?available=true").await.ok()?;
                (reply.body.get("modems")?.as_array()?.len() == count).then_some(())
            },
        )
        .await
        .map_err(Into::into)
    }

    /// `POST /v1/allocations` for `order_id`, one day long.
    pub async fn allocate(&self, order_id: &str) -> anyhow::Result<super::api::Reply> {
        self.market
            .post(
                "/v1/allocations",
                json!({"order_id": order_id, "duration_s": 86_400}),
            )
            .await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The buyer's proxy URLs of an allocation: (`http://…`, `socks5h://…`).
pub fn proxy_urls(allocation: &Value) -> anyhow::Result<(String, String)> {
    let field = |name: &str| -> anyhow::Result<String> {
        let v = allocation
            .get(name)
            .with_context(|| format!("allocation has no {name}"))?;
        Ok(v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string()))
    };
    let (login, password, host) = (field("login")?, field("password")?, field("host")?);
    Ok((
        format!("http://{login}:{password}@{host}:{}", field("http_port")?),
        format!(
            "socks5h://{login}:{password}@{host}:{}",
            field("socks_port")?
        ),
    ))
}

/// How the harness's agent reaches the plane: trust matching `tls`, or plaintext.
fn control_plane_settings(url: &str, tls: Option<&PlaneTls>) -> ControlPlaneConfig {
    let Some(tls) = tls else {
        return ControlPlaneConfig::plaintext(url);
    };
    ControlPlaneConfig {
        ca_file: tls.ca_file.clone(),
        pin_sha256: match tls.ca_file {
            Some(_) => None,
            None => Pin::parse(&tls.fingerprint).ok(),
        },
        ..ControlPlaneConfig::new(url)
    }
}

/// A REST client that trusts the plane exactly as the agent does.
pub fn api_client(plane: &ControlPlaneConfig) -> anyhow::Result<reqwest::Client> {
    farmhand_agent::install_crypto_provider();
    let mut builder = reqwest::Client::builder();
    if plane.uses_tls() {
        let trust = Trust::for_plane(plane)?;
        builder = builder.tls_backend_preconfigured(trust.client_config().as_ref().clone());
    }
    Ok(builder.build()?)
}

async fn start_sim(options: &StackOptions, stop: &CancellationToken) -> anyhow::Result<SimHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let config = SimConfig {
        modems: options.modems,
        password: options.proxysmart_password.clone(),
        rotation_delay: options.rotation_delay,
        utc_offset_s: options.box_utc_offset_s,
        quirks: options.quirks.clone(),
        ..SimConfig::default()
    };
    Ok(sim::start(listener, config, stop.child_token()).await?)
}

/// The variable that puts the stack's control plane on a throw-away PostgreSQL:
/// `FARMHAND_TEST_STORE=postgres` (CI runs the end-to-end suite once more so; unset, the
/// plane keeps the default embedded store).
pub const TEST_STORE: &str = "FARMHAND_TEST_STORE";

/// Points `config` at a new PostgreSQL cluster when [`TEST_STORE`] asks for one, and
/// returns it: it lives as long as the stack.
fn test_store(config: &mut ServerConfig) -> anyhow::Result<Option<PgCluster>> {
    let database = test_database()?;
    if let Some(database) = &database {
        config.store = StoreConfig::postgres(&database.url, PgTls::Disable);
    }
    Ok(database)
}

/// A new PostgreSQL cluster when [`TEST_STORE`] asks for one (it must then be
/// installed); `None` for the default embedded store.
pub(super) fn test_database() -> anyhow::Result<Option<PgCluster>> {
    match std::env::var(TEST_STORE).as_deref() {
        Err(_) | Ok("" | "sled") => Ok(None),
        Ok("postgres") => PgCluster::start()
            .map(Some)
            .with_context(|| format!("{TEST_STORE}=postgres: no PostgreSQL to start")),
        Ok(other) => anyhow::bail!("{TEST_STORE}={other:?}: expected sled or postgres"),
    }
}
