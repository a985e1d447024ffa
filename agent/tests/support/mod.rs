//! Shared helpers of the agent's integration tests. The ProxySmart they talk to is the
//! project's one simulator, `farmhand-sim` (see `docs/simulator.md`), started in-process on
//! 127.0.0.1:0 by [`TestBox::start`]: real HTTP, Basic auth, JSON served as text/html, real
//! proxy listeners for applied ports, injectable faults and quirks.
//!
//! The simulator judges what it receives — every `store_port` document, every IMEI and port
//! id in a query, any path the real API does not have — and [`TestBox::assert_no_violations`]
//! adds the Farmhand conventions a box does not judge: the agent must never send
//! unvalidated input. `executor` runs commands against it without the rest of the agent,
//! `plane` is a fake control plane for tests that run the whole agent, `proxy` a real HTTP
//! CONNECT proxy in front of it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod executor;
pub mod plane;
pub mod proxy;

use farmhand_sim::{SimConfig, SimHandle, SimPort};
use serde_json::{json, Value};
use std::ops::Deref;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

pub const USER: &str = "proxy";
pub const PASSWORD: &str = "canary-proxysmart-pw-7781";
/// How long a rotation on the test box shows "IP_RESET" (the simulator's default is 2 s).
pub const ROTATION_DELAY: Duration = Duration::from_millis(300);
/// The agent's `QUOTA_TYPE` and `QUOTA_DIRECTION`, sent with a quota (docs/protocol.md).
pub const QUOTA_KIND: (&str, &str) = ("monthly", "inout");

/// The IMEI of the modem tests plug in later with [`TestBox::plug_in_third`] (a valid,
/// 15-digit one the box does not have at start).
pub fn imei_3() -> String {
    farmhand_sim::imei(9)
}

/// A simulator running for one test (shut down when dropped): two modems, the first
/// online, the second offline; the tests' admin credentials; rotations of
/// [`ROTATION_DELAY`]; a re-store replaces the whole port record (the pessimistic box, on
/// which a renewal that left the limits out would clear them).
pub struct TestBox {
    pub sim: SimHandle,
    /// The online modem's IMEI.
    pub online: String,
    /// The offline modem's IMEI.
    pub offline: String,
    _shutdown: DropGuard,
}

impl Deref for TestBox {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.sim
    }
}

impl TestBox {
    pub async fn start() -> TestBox {
        Self::start_with(SimConfig {
            rotation_delay: ROTATION_DELAY,
            store_port_replaces: true,
            ..SimConfig::default()
        })
        .await
    }

    /// A test box from `config` (its modem count and credentials replaced by the test box's:
    /// two modems, the second offline).
    pub async fn start_with(config: SimConfig) -> TestBox {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let config = SimConfig {
            modems: 2,
            username: USER.into(),
            password: PASSWORD.into(),
            ..config
        };
        let sim = farmhand_sim::start(listener, config, shutdown.clone())
            .await
            .unwrap();
        let imeis = sim.imeis();
        let (online, offline) = (imeis[0].clone(), imeis[1].clone());
        sim.set_online(&offline, false).unwrap();
        TestBox {
            sim,
            online,
            offline,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// The box's API base URL.
    pub fn url(&self) -> String {
        self.sim.base_url()
    }

    /// Plugs in a third, online modem ([`imei_3`]) and returns its IMEI.
    pub fn plug_in_third(&self) -> String {
        let imei = imei_3();
        self.sim.add_modem(&imei, "198.51.100.3");
        imei
    }

    /// The stored port with this `portName`.
    pub fn port_named(&self, name: &str) -> Option<SimPort> {
        self.sim.ports().into_iter().find(|p| p.port_name == name)
    }

    /// The IMEI of every `reset_modem_by_imei` call, in order.
    pub fn reset_imeis(&self) -> Vec<String> {
        self.sim
            .calls()
            .into_iter()
            .filter(|c| c.path == "/apix/reset_modem_by_imei")
            .map(|c| c.target)
            .collect()
    }

    /// How many rotations of `imei` were requested.
    pub fn resets_of(&self, imei: &str) -> usize {
        self.reset_imeis().iter().filter(|i| *i == imei).count()
    }

    /// The IMEI of every `store_port` document, in order.
    pub fn stored_imeis(&self) -> Vec<String> {
        self.sim
            .store_bodies()
            .iter()
            .map(|b| b["IMEI"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The last `store_port` document the box got.
    pub fn last_store_body(&self) -> Value {
        self.sim
            .store_bodies()
            .last()
            .cloned()
            .expect("a store_port")
    }

    /// Sets the day counters `bandwidth_report_all` shows for `port_id`.
    pub fn set_counters(&self, port_id: &str, day_in: Value, day_out: Value) {
        self.sim.set_bandwidth(
            port_id,
            json!({"port": port_id, "portName": "x", "bandwidth_bytes_day_in": day_in,
                   "bandwidth_bytes_day_out": day_out, "bandwidth_bytes_yesterday_in": null,
                   "bandwidth_bytes_month_in": "9.9 GB"}),
        );
    }

    /// Everything the agent sent that it should not have: what the box flagged, and every
    /// `store_port` document that breaks a Farmhand convention the box does not judge.
    pub fn violations(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.sim.violations();
        for body in self.sim.store_bodies() {
            problems.extend(farmhand_conventions(&body));
        }
        problems
    }

    /// Panics with the list when [`TestBox::violations`] is not empty.
    pub fn assert_no_violations(&self) {
        let problems = self.violations();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

/// What the agent promises of every `store_port` document beyond the box's own rules: the
/// name is `farmhand-<allocation id>`, the expiry is always sent, to the minute (what
/// clients of live boxes send), and a quota goes with its kind — which goes with a quota
/// only.
fn farmhand_conventions(d: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let name = d["portName"].as_str().unwrap_or_default();
    if name.strip_prefix("farmhand-").is_none_or(str::is_empty) {
        problems.push(format!(
            "store_port portName {name:?}: not farmhand-<allocation id>"
        ));
    }
    let expiry = d["PROXY_VALID_BEFORE"].as_str().unwrap_or_default();
    if expiry.len() != "YYYY-MM-DDTHH:MM".len() {
        problems.push(format!(
            "store_port PROXY_VALID_BEFORE {expiry:?}: not YYYY-MM-DDTHH:MM"
        ));
    }
    let kind = (d.get("QUOTA_TYPE"), d.get("QUOTA_DIRECTION"));
    let ok = match d.get("bw_quota") {
        Some(_) => kind == (Some(&json!(QUOTA_KIND.0)), Some(&json!(QUOTA_KIND.1))),
        None => kind == (None, None),
    };
    if !ok {
        problems.push(format!(
            "store_port QUOTA_TYPE/QUOTA_DIRECTION {kind:?}: must be {QUOTA_KIND:?}, with bw_quota only"
        ));
    }
    problems
}

/// A config file for the real agent against `box_` (the plane unreachable: nothing here
/// needs it), with the test box's password file; returns its path.
pub fn agent_config(
    dir: &std::path::Path,
    box_: &TestBox,
    extra_proxysmart: &str,
) -> std::path::PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let password = dir.join("proxysmart.password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let config = dir.join("agent.toml");
    let text = format!(
        "state_dir = {state:?}\n[control_plane]\nurl = \"http://127.0.0.1:9\"\ninsecure_plaintext = true\n\
         [proxysmart]\nurl = {:?}\nusername = {USER:?}\npassword_file = {password:?}\n{extra_proxysmart}\n\
         [site]\npublic_host = \"203.0.113.7\"\ncountry = \"DE\"\n",
        box_.url()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The typed config of an agent run in-process against `box_` and the plane at `plane`,
/// with its state in `dir`: a poll every second, a site in Berlin, the default policy.
pub fn run_config(
    dir: &std::path::Path,
    plane: &str,
    box_: &TestBox,
) -> farmhand_agent::AgentConfig {
    let mut proxysmart = farmhand_agent::ProxysmartConfig::new(
        box_.url(),
        USER,
        farmhand_agent::Masked::new(PASSWORD),
    );
    proxysmart.poll_interval = Duration::from_secs(1);
    farmhand_agent::AgentConfig {
        state_dir: dir.to_path_buf(),
        control_plane: farmhand_agent::ControlPlaneConfig::plaintext(plane),
        proxysmart,
        site: farmhand_protocol::Site {
            public_host: "203.0.113.7".into(),
            country: "DE".into(),
            city: Some("Berlin".into()),
        },
        policy: Default::default(),
        metrics: Default::default(),
        log: Default::default(),
        usage: Default::default(),
        health: Default::default(),
    }
}

#[allow(unused_imports)] // not every test binary waits
pub use farmhand_test_support::eventually;
