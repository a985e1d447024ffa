//! Test vocabulary for the control plane's integration tests: an in-process plane on
//! 127.0.0.1:0 with a temp data dir and two API keys, a minimal raw HTTP client, a fake
//! agent speaking the protocol over tokio-tungstenite with a ring key, and `eventually`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod flows;
pub mod http;
pub mod receiver;

#[allow(unused_imports)] // not every test binary waits
pub use farmhand_test_support::eventually;

pub use agent::{modem, FakeAgent, Identity};
pub use http::Response;

use farmhand_control::clock::{Clock, Sweeps};
use farmhand_control::gateway::Gateway;
use farmhand_control::{ControlPlane, Role, ServerConfig, Store};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The blocks test planes allow webhooks to target: where test receivers listen.
pub const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// How long any eventual condition may take on a loaded 2-core box.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A node's `[store]` on the throw-away PostgreSQL `cluster` (plain TCP on loopback).
pub fn postgres_store(
    cluster: &farmhand_test_support::postgres::PgCluster,
) -> farmhand_control::config::StoreConfig {
    use farmhand_control::config::{PgTls, StoreConfig};
    StoreConfig::postgres(&cluster.url, PgTls::Disable)
}

/// Two nodes on the throw-away PostgreSQL `cluster` (the second with the first's
/// credential key).
pub async fn two_nodes(
    cluster: &farmhand_test_support::postgres::PgCluster,
) -> (Arc<TestPlane>, Arc<TestPlane>) {
    let a = Arc::new(TestPlane::start_node(postgres_store(cluster), None).await);
    let b = Arc::new(TestPlane::start_node(postgres_store(cluster), Some(&a)).await);
    (a, b)
}

/// A running control plane.
pub struct TestPlane {
    pub addr: SocketAddr,
    /// The plane's store while it runs (dropped by `stop`, which releases the database).
    store: Option<Store>,
    pub admin: String,
    pub market: String,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    pub config: ServerConfig,
    /// Wakes the running plane's expiry sweeper.
    pub expiry: Arc<Notify>,
    /// The running plane's agent gateway (dropped by `stop`: it holds the store).
    gateway: Option<Gateway>,
    /// The plane's clock: the system's, or a manual one the test moves (`start_on`).
    pub clock: Clock,
    /// What the running plane's expiry sweeper has done.
    pub sweeps: Arc<Sweeps>,
    /// What the running plane's outage sweeper has done (`found`: moves started).
    pub outages: Arc<Sweeps>,
    /// Makes the running plane's outage sweeper scan now.
    pub outage_scan: Arc<Notify>,
}

impl TestPlane {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a plane whose config `tweak` may adjust (timeouts, limits). Webhooks may
    /// target loopback (every test receiver is on 127.0.0.1); a test of the default
    /// target policy clears `webhooks.allow_private_targets` in `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_on(Clock::system(), tweak).await
    }

    /// A node of a cluster on the PostgreSQL database `store`, with the credential key of `sibling`'s data directory when given
    /// (every node of a database seals with one key).
    pub async fn start_node(
        store: farmhand_control::config::StoreConfig,
        sibling: Option<&TestPlane>,
    ) -> Self {
        let key = sibling.map(|s| std::fs::read(s.dir.path().join("credentials.key")).unwrap());
        let tweak = |c: &mut ServerConfig| {
            c.store = store;
            if let Some(key) = key {
                let path = c.data_dir.join("credentials.key");
                std::fs::write(&path, key).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        };
        Self::start_on(Clock::system(), tweak).await
    }

    /// [`TestPlane::start_with`] on `clock` (a manual one makes time a test input).
    pub async fn start_on(clock: Clock, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        };
        config.webhooks.allow_private_targets = LOOPBACK.iter().map(|b| b.to_string()).collect();
        tweak(&mut config);
        let plane = ControlPlane::open_with_clock(config.clone(), clock.clone())
            .await
            .unwrap();
        let admin = plane.create_key(Role::Admin, "ops").await.unwrap();
        let market = plane.create_key(Role::Marketplace, "shop").await.unwrap();
        let expiry = plane.expiry_waker();
        let sweeps = plane.expiry_sweeps();
        let (outages, outage_scan) = (plane.outage_sweeps(), plane.outage_waker());
        let gateway = plane.gateway();
        let (addr, store, shutdown, task) = run(plane).await;
        TestPlane {
            clock,
            sweeps,
            outages,
            outage_scan,
            expiry,
            gateway: Some(gateway),
            addr,
            store: Some(store),
            admin,
            market,
            shutdown,
            task: Some(task),
            dir,
            config,
        }
    }

    /// Stops the plane and starts it again on the same data directory (new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        let plane = ControlPlane::open_with_clock(self.config.clone(), self.clock.clone())
            .await
            .unwrap();
        self.expiry = plane.expiry_waker();
        self.sweeps = plane.expiry_sweeps();
        (self.outages, self.outage_scan) = (plane.outage_sweeps(), plane.outage_waker());
        self.gateway = Some(plane.gateway());
        let (addr, store, shutdown, task) = run(plane).await;
        (self.addr, self.store, self.shutdown) = (addr, Some(store), shutdown);
        self.task = Some(task);
    }

    /// Stops the plane and waits until it has flushed and released the database.
    pub async fn stop(&mut self) {
        self.store = None;
        self.gateway = None;
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(farmhand_test_support::patience(PATIENCE), task)
                .await
                .expect("plane stops in time")
                .unwrap();
        }
    }

    /// The running plane's agent gateway.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("the plane is running")
    }

    /// The running plane's store.
    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("the plane is running")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/agent/connect", self.addr)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Response {
        http::request(self.addr, method, path, key, body).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.call("GET", path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.call("POST", path, Some(key), Some(&body.to_string()))
            .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Response {
        self.call("DELETE", path, Some(key), None).await
    }

    /// Issues an enrollment token through the admin API (label `seller-42`).
    pub async fn token(&self) -> String {
        self.token_for("seller-42").await
    }

    /// Issues an enrollment token of seller `label` through the admin API.
    pub async fn token_for(&self, label: &str) -> String {
        let r = self
            .post(
                "/v1/enrollment-tokens",
                &self.admin,
                json!({"label": label, "ttl_s": 3600}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["token"].as_str().unwrap().to_string()
    }

    /// Enrolls a new agent identity through the public API (seller `seller-42`).
    pub async fn enroll(&self) -> Identity {
        self.enroll_as("seller-42").await
    }

    /// Enrolls a new agent identity of seller `label` through the public API.
    pub async fn enroll_as(&self, label: &str) -> Identity {
        let identity = Identity::generate();
        let token = self.token_for(label).await;
        let body =
            json!({"token": token, "public_key": identity.public_key_b64(), "hostname": "box-1"});
        let r = self
            .call("POST", "/v1/agent/enroll", None, Some(&body.to_string()))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        identity.with_id(r.json()["agent_id"].as_str().unwrap())
    }

    /// Enrolls an agent, connects it and reports one DE/Vodafone modem; waits until the
    /// plane offers that modem.
    pub async fn agent_with_modem(&self, imei: &str) -> FakeAgent {
        self.agent_of("seller-42", imei).await
    }

    /// As [`TestPlane::agent_with_modem`], for seller `label`.
    pub async fn agent_of(&self, label: &str, imei: &str) -> FakeAgent {
        let identity = self.enroll_as(label).await;
        let mut agent = FakeAgent::connect(self, &identity).await.unwrap();
        agent.send_inventory(vec![modem(imei, "Vodafone")]).await;
        self.wait_available(imei).await;
        agent
    }

    pub async fn wait_available(&self, imei: &str) {
        let path = format!("/v1/modems?imei={imei}&available=true");
        eventually("modem becomes available", || async {
            self.get(&path, &self.admin).await.json()["modems"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        })
        .await;
    }

    /// Moves the expiry of `allocation_id` to `from_now` (may be negative) directly in the
    /// store — the API's minimum lifetime is 60 s — and wakes the expiry sweeper.
    pub async fn set_expiry(&self, allocation_id: &str, from_now: time::Duration) {
        let mut record = self
            .store()
            .allocation(allocation_id)
            .await
            .unwrap()
            .unwrap();
        record.expires_at = self.clock.now() + from_now;
        self.store().save_allocation(&record).await.unwrap();
        self.expiry.notify_one();
    }

    /// The allocation as the marketplace sees it.
    pub async fn allocation(&self, allocation_id: &str) -> Value {
        self.get(&format!("/v1/allocations/{allocation_id}"), &self.market)
            .await
            .json()
    }

    /// Registers an operator's webhook endpoint for `events` at `url`.
    pub async fn subscribe(&self, url: &str, events: &[&str]) {
        let body = json!({"url": url, "events": events});
        let r = self.post("/v1/webhooks", &self.admin, body).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// How many entries of `action` the audit log holds (among its first 1,000).
    pub async fn audit_count(&self, action: &str) -> usize {
        let audit = self.get("/v1/audit?limit=1000", &self.admin).await.json();
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    }

    /// Waits until `agent_id` shows as disconnected.
    pub async fn wait_disconnected(&self, agent_id: &str) {
        eventually("the agent is disconnected", || async {
            !self.connected(agent_id).await
        })
        .await;
    }

    /// Whether the admin API shows `agent_id` as connected.
    pub async fn connected(&self, agent_id: &str) -> bool {
        let r = self
            .get(&format!("/v1/agents/{agent_id}"), &self.admin)
            .await;
        r.json()["connected"] == json!(true)
    }
}

/// Serves `plane` on 127.0.0.1:0.
async fn run(plane: ControlPlane) -> (SocketAddr, Store, CancellationToken, JoinHandle<()>) {
    let store = plane.store();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { plane.serve(listener, token).await.unwrap() });
    (addr, store, shutdown, task)
}

impl Drop for TestPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}
