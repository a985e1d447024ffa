//! The box's mutable model — modems, ports, fault, API call counts — kept behind one
//! `std::sync::Mutex` in `Sim` and never held across an `.await`.

use super::error::SimError;
use super::faults::{Fault, WriteFault};
use super::limits::PortLimits;
use super::model::{SimModem, SimPort};
use super::quirks::Quirks;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most entries kept in each of the logs tests read (calls, store bodies, violations), so a
/// long-running simulator does not grow without bound.
const LOG_LIMIT: usize = 10_000;
/// How many ports `get_free_tcp_ports` offers by default (pairs, on a pool box).
pub(crate) const FREE_PORTS: usize = 10;

/// Forwarded-byte counters of one port, shared with its live proxy connections.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Towards the client (download).
    pub bytes_in: AtomicU64,
    /// Towards the origin (upload).
    pub bytes_out: AtomicU64,
    /// Bytes counted against the port's quota (see `limits`); the traffic reset keeps it.
    pub quota_used: AtomicU64,
    /// Every byte towards the client since the port was created (`lifetime_in`).
    pub lifetime_in: AtomicU64,
    /// Every byte towards the origin since the port was created (`lifetime_out`).
    pub lifetime_out: AtomicU64,
}

impl Counters {
    /// The nightly reset of the bandwidth report (quota usage and lifetime totals are kept).
    pub fn reset(&self) {
        self.bytes_in.store(0, Ordering::Relaxed);
        self.bytes_out.store(0, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ModemState {
    pub imei: String,
    pub nick: String,
    pub model: String,
    pub model_shown: String,
    pub phone: String,
    pub iccid: String,
    pub usb_id: String,
    pub dev: String,
    pub carrier: String,
    pub ip: String,
    pub online: bool,
    pub signal: String,
    pub rotating: bool,
    pub rotations: u32,
    pub same_ip_next: bool,
    pub position: u32,
    /// `SimStatus` ("OK"; e.g. "NOT INSERTED" for a dead SIM).
    pub sim_status: String,
    /// `HTTP_REDIRECT_IMPOSED`: the carrier's captive page (SIM out of credit).
    pub redirect_imposed: bool,
    /// `AUTO_IP_ROTATION`, minutes (0 = off): the box rotates the modem by itself.
    pub auto_rotation_min: u32,
    /// `IS_REBOOTING`.
    pub rebooting: bool,
    /// How the modem's proxies carry traffic (`proxy_path`): healthy unless a test broke it.
    pub path: ProxyPath,
}

/// How a modem's proxies behave beyond what the API shows: the failures a box cannot see
/// (`IS_ONLINE` stays "yes") but a buyer does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProxyPath {
    /// What the proxies do with a connection.
    pub fault: PathFault,
    /// The address traffic leaves from when it is not the modem's `EXT_IP` (`None`: it is).
    pub egress_ip: Option<String>,
    /// How long a proxy waits before it answers a connection's first request.
    pub first_byte_delay_ms: u64,
}

/// What a modem's proxies do with a new connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathFault {
    /// Proxy as usual.
    #[default]
    Ok,
    /// Accept the TCP connection and never answer (a hung proxy process).
    Blackhole,
    /// Close every connection at once (the proxy died; the modem still shows online).
    Dead,
}

impl ProxyPath {
    /// The source address outgoing connections bind to: the egress IP (or, when none is
    /// set, `ext_ip`) when it is a loopback address this host owns, so a test's echo
    /// endpoint on 127.0.0.1 sees the modem's IP as a real box's origin would. Any other
    /// address cannot be bound here: traffic then leaves from the default address.
    pub fn source(&self, ext_ip: &str) -> Option<std::net::IpAddr> {
        let ip: std::net::IpAddr = self.egress_ip.as_deref().unwrap_or(ext_ip).parse().ok()?;
        ip.is_loopback().then_some(ip)
    }
}

impl ModemState {
    pub fn snapshot(&self) -> SimModem {
        SimModem {
            imei: self.imei.clone(),
            nick: self.nick.clone(),
            model: self.model_shown.clone(),
            carrier: self.carrier.clone(),
            ext_ip: self.ip.clone(),
            online: self.online,
            rotating: self.rotating,
            rotations: self.rotations,
            same_ip_next_rotation: self.same_ip_next,
            signal: self.signal.clone(),
            position: self.position,
            iccid: self.iccid.clone(),
            usb_id: self.usb_id.clone(),
            sim_status: self.sim_status.clone(),
            redirect_imposed: self.redirect_imposed,
            auto_rotation_min: self.auto_rotation_min,
            rebooting: self.rebooting,
            proxy: self.path.fault,
            egress_ip: self.path.egress_ip.clone(),
            first_byte_delay_ms: self.path.first_byte_delay_ms,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PortState {
    pub id: String,
    pub name: String,
    pub imei: String,
    pub http_port: u16,
    pub socks_port: u16,
    pub login: String,
    pub password: String,
    pub created_at: String,
    pub valid_before: String,
    pub quota: String,
    pub quota_type: String,
    pub quota_direction: String,
    pub bandlimin: String,
    pub bandlimout: String,
    pub owner: String,
    pub reset_token: String,
    pub applied: bool,
    pub foreign: bool,
    pub counters: Arc<Counters>,
}

impl PortState {
    pub fn snapshot(&self) -> SimPort {
        SimPort {
            port_id: self.id.clone(),
            port_name: self.name.clone(),
            imei: self.imei.clone(),
            http_port: self.http_port,
            socks_port: self.socks_port,
            login: self.login.clone(),
            password: self.password.clone(),
            valid_before: self.valid_before.clone(),
            quota: self.quota.clone(),
            bandlimin: self.bandlimin.clone(),
            bandlimout: self.bandlimout.clone(),
            applied: self.applied,
            foreign: self.foreign,
            bytes_in: self.counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.counters.bytes_out.load(Ordering::Relaxed),
            over_quota: self.over_quota(),
        }
    }

    /// The limits as stored now (they take effect on `apply_port`).
    pub fn limits(&self) -> PortLimits {
        PortLimits::from_stored(
            &self.quota,
            &self.quota_direction,
            &self.bandlimin,
            &self.bandlimout,
        )
    }

    /// `IS_OVER_QUOTA`: the stored quota is used up.
    pub fn over_quota(&self) -> bool {
        self.limits().over_quota(&self.counters)
    }
}

/// What `list_ports_json` shows of a port while a write to it is not yet visible
/// (`Quirks::write_delay`): the version before the write, or nothing (a new port).
#[derive(Debug, Clone)]
pub(crate) struct Stale {
    pub until: Instant,
    pub shown: Option<PortState>,
}

/// One authenticated API call, for tests: the path and the IMEI or port id it named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiCall {
    /// The request path, e.g. "/crud/store_port".
    pub path: String,
    /// The IMEI, NICK or port id the call named ("" for none).
    pub target: String,
}

#[derive(Debug)]
pub(crate) struct State {
    pub modems: Vec<ModemState>,
    /// Keyed by portID; ordered so listings are stable.
    pub ports: BTreeMap<String, PortState>,
    pub fault: Fault,
    /// A fault of the write endpoints only (until cleared).
    pub write_fault: Option<WriteFault>,
    pub api_calls: HashMap<String, usize>,
    /// Every authenticated call with its target, oldest first (bounded).
    pub call_log: Vec<ApiCall>,
    /// Every `store_port` `data` document as received (bounded).
    pub store_bodies: Vec<Value>,
    /// Input a real box would choke on (see `inspect`), oldest first (bounded).
    pub violations: Vec<String>,
    /// Tests' own `bandwidth_report_all` entries, by port id (replace the live ones).
    pub bandwidth_override: BTreeMap<String, Value>,
    /// How many ports (pairs, on a pool box) `get_free_tcp_ports` offers at most.
    pub free_ports_offered: usize,
    pub rotation_delay: Duration,
    /// The box's zone, seconds east of UTC (see `SimConfig::utc_offset_s`).
    pub utc_offset_s: i32,
    /// A re-store replaces the whole port (see `SimConfig::store_port_replaces`).
    pub store_port_replaces: bool,
    pub quirks: Quirks,
    /// Ports whose last write is not visible yet (`Quirks::write_delay`).
    pub stale: BTreeMap<String, Stale>,
    /// Modems whose first rotation request was already answered "busy".
    pub busy_answered: HashSet<String>,
    /// Web-panel sessions (cookie value → expiry), for `Quirks::panel_login`.
    pub sessions: HashMap<String, Instant>,
    /// Credentials the `/conf/add_port` form offered, by the port id it offered.
    pub offered: HashMap<String, (String, String)>,
    ip_seq: u32,
}

impl State {
    pub fn new(modems: Vec<ModemState>, rotation_delay: Duration) -> Self {
        State {
            modems,
            ports: BTreeMap::new(),
            fault: Fault::None,
            write_fault: None,
            api_calls: HashMap::new(),
            call_log: Vec::new(),
            store_bodies: Vec::new(),
            violations: Vec::new(),
            bandwidth_override: BTreeMap::new(),
            free_ports_offered: FREE_PORTS,
            rotation_delay,
            utc_offset_s: 0,
            store_port_replaces: false,
            quirks: Quirks::default(),
            stale: BTreeMap::new(),
            busy_answered: HashSet::new(),
            sessions: HashMap::new(),
            offered: HashMap::new(),
            ip_seq: 0,
        }
    }

    pub fn modem(&self, imei: &str) -> Option<&ModemState> {
        self.modems.iter().find(|m| m.imei == imei)
    }

    pub fn modem_mut(&mut self, imei: &str) -> Result<&mut ModemState, SimError> {
        self.modems
            .iter_mut()
            .find(|m| m.imei == imei)
            .ok_or(SimError::NoSuchModem)
    }

    pub fn imei_by_nick(&self, nick: &str) -> Option<String> {
        self.modems
            .iter()
            .find(|m| m.nick == nick)
            .map(|m| m.imei.clone())
    }

    /// The TCP ports used by every port except `except_id`.
    pub fn used_tcp_ports(&self, except_id: &str) -> Vec<u16> {
        self.ports
            .values()
            .filter(|p| p.id != except_id)
            .flat_map(|p| [p.http_port, p.socks_port])
            .collect()
    }

    pub fn port_by_token(&self, token: &str) -> Option<&PortState> {
        self.ports.values().find(|p| p.reset_token == token)
    }

    /// A documentation-range address no modem currently holds: 203.0.113.x, then
    /// 198.51.100.x, then 192.0.2.x (the seed uses 198.51.100.x from the bottom).
    pub fn fresh_ip(&mut self) -> Option<String> {
        const NETS: [&str; 3] = ["203.0.113", "198.51.100", "192.0.2"];
        for _ in 0..NETS.len() * 254 {
            let seq = self.ip_seq;
            self.ip_seq = self.ip_seq.wrapping_add(1);
            let net = NETS[(seq as usize / 254) % NETS.len()];
            let ip = format!("{net}.{}", seq % 254 + 1);
            if !self.modems.iter().any(|m| m.ip == ip) {
                return Some(ip);
            }
        }
        None
    }

    pub fn count_call(&mut self, path: &str, target: &str) {
        *self.api_calls.entry(path.to_string()).or_default() += 1;
        push_bounded(
            &mut self.call_log,
            ApiCall {
                path: path.to_string(),
                target: target.to_string(),
            },
        );
    }

    pub fn violation(&mut self, problem: String) {
        tracing::warn!(%problem, "simulator: a real box would not take this");
        push_bounded(&mut self.violations, problem);
    }

    pub fn record_store_body(&mut self, body: Value) {
        push_bounded(&mut self.store_bodies, body);
    }

    /// Hides the current version of `port_id` (or its absence) from the port list for the
    /// write delay, unless an earlier write's delay is still running (the list then keeps
    /// showing what it showed before that one).
    pub fn delay_visibility(&mut self, port_id: &str) {
        let delay = self.quirks.write_delay;
        if delay.is_zero() {
            return;
        }
        let now = Instant::now();
        let shown = self.ports.get(port_id).cloned();
        let entry = self
            .stale
            .entry(port_id.to_string())
            .or_insert(Stale { until: now, shown });
        if entry.until <= now {
            entry.shown = self.ports.get(port_id).cloned();
        }
        entry.until = now + delay;
    }

    /// The ports as `list_ports_json` shows them now (late writes hidden).
    pub fn visible_ports(&mut self) -> Vec<PortState> {
        let now = Instant::now();
        self.stale.retain(|_, s| s.until > now);
        let mut ids: Vec<&String> = self.ports.keys().chain(self.stale.keys()).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| match self.stale.get(id) {
                Some(stale) => stale.shown.clone(),
                None => self.ports.get(id).cloned(),
            })
            .collect()
    }
}

fn push_bounded<T>(log: &mut Vec<T>, item: T) {
    if log.len() >= LOG_LIMIT {
        log.remove(0);
    }
    log.push(item);
}
