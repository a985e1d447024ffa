//! `SimHandle`: the in-process remote control tests use — snapshots by value, modem
//! switches, faults, foreign ports, API call counts.

use super::error::SimError;
use super::faults::{Fault, WriteFault};
use super::model::{SimModem, SimPort};
use super::quirks::Quirks;
use super::shared::Sim;
use super::state::{ApiCall, ModemState};
use super::store::PortInput;
use super::{listeners, rotation, util};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A cheap, cloneable handle on a running simulator.
#[derive(Debug, Clone)]
pub struct SimHandle {
    sim: Arc<Sim>,
}

impl SimHandle {
    pub(crate) fn new(sim: Arc<Sim>) -> Self {
        SimHandle { sim }
    }

    /// "http://127.0.0.1:PORT" — the box's API base URL (no trailing slash).
    pub fn base_url(&self) -> String {
        self.sim.base_url.clone()
    }

    /// The address the simulator's API listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.sim.local_addr
    }

    /// IMEIs of the real modems, in status-list order.
    pub fn imeis(&self) -> Vec<String> {
        self.sim
            .state()
            .modems
            .iter()
            .map(|m| m.imei.clone())
            .collect()
    }

    /// Snapshots of every real modem.
    pub fn modems(&self) -> Vec<SimModem> {
        self.sim
            .state()
            .modems
            .iter()
            .map(ModemState::snapshot)
            .collect()
    }

    /// Snapshot of one modem.
    pub fn modem(&self, imei: &str) -> Option<SimModem> {
        self.sim.state().modem(imei).map(ModemState::snapshot)
    }

    /// `IS_ONLINE`; an offline modem's proxies close new connections.
    pub fn set_online(&self, imei: &str, online: bool) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.online = online)
    }

    /// Sets the modem's public IP (shown once any rotation in progress is over).
    pub fn set_ext_ip(&self, imei: &str, ip: &str) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.ip = ip.to_string())
    }

    /// `CELLOP`, e.g. "Unknown" or "" to simulate lost signal.
    pub fn set_carrier(&self, imei: &str, carrier: &str) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.carrier = carrier.to_string())
    }

    /// `SIGNAL_STRENGTH`.
    pub fn set_signal(&self, imei: &str, signal: &str) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.signal = signal.to_string())
    }

    /// The next rotation of this modem comes back with the same IP.
    pub fn arm_same_ip_rotation(&self, imei: &str) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.same_ip_next = true)
    }

    /// Starts a rotation as `reset_modem_by_imei` would.
    pub fn rotate(&self, imei: &str) -> Result<(), SimError> {
        rotation::rotate(&self.sim, imei)
    }

    /// How long later rotations show "IP_RESET".
    pub fn set_rotation_delay(&self, delay: Duration) {
        self.sim.state().rotation_delay = delay;
    }

    /// Replaces the current API fault (`Fault::None` clears it).
    pub fn set_fault(&self, fault: Fault) {
        self.sim.set_fault(fault);
    }

    /// The current API fault.
    pub fn fault(&self) -> Fault {
        self.sim.state().fault
    }

    /// `SimStatus`, e.g. "NOT INSERTED" for a dead SIM ("OK" by default).
    pub fn set_sim_status(&self, imei: &str, status: &str) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.sim_status = status.to_string())
    }

    /// `HTTP_REDIRECT_IMPOSED`: the carrier's captive page (the SIM is out of credit).
    pub fn set_redirect_imposed(&self, imei: &str, imposed: bool) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.redirect_imposed = imposed)
    }

    /// `AUTO_IP_ROTATION` in minutes (0 = off): the box rotates the modem by itself.
    pub fn set_auto_rotation(&self, imei: &str, minutes: u32) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.auto_rotation_min = minutes)
    }

    /// `IS_REBOOTING`.
    pub fn set_rebooting(&self, imei: &str, rebooting: bool) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.rebooting = rebooting)
    }

    /// `ICCID`: a new SIM card in the same modem.
    pub fn set_iccid(&self, imei: &str, iccid: &str) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.iccid = iccid.to_string())
    }

    /// What the modem's proxies do with new connections (`PathFault::Dead`: the proxy
    /// died while the API still shows the modem online).
    pub fn set_proxy_fault(&self, imei: &str, fault: crate::PathFault) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.path.fault = fault)
    }

    /// Traffic leaves from `ip` instead of the modem's `EXT_IP` (`None`: from `EXT_IP`).
    pub fn set_egress_ip(&self, imei: &str, ip: Option<&str>) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.path.egress_ip = ip.map(str::to_string))
    }

    /// The modem's proxies wait this long before answering a first request.
    pub fn set_first_byte_delay(&self, imei: &str, delay: Duration) -> Result<(), SimError> {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.with_modem(imei, |m| m.path.first_byte_delay_ms = ms)
    }

    /// `USB_ID`: the modem re-plugged elsewhere.
    pub fn set_usb_id(&self, imei: &str, usb_id: &str) -> Result<(), SimError> {
        self.with_modem(imei, |m| m.usb_id = usb_id.to_string())
    }

    /// Plugs in one more modem with this IMEI (any string: a test may add a malformed one),
    /// online with `ext_ip`, at the end of the status list.
    pub fn add_modem(&self, imei: &str, ext_ip: &str) {
        let mut state = self.sim.state();
        let n = state.modems.len() + 1;
        let mut modem = super::seed::modems(n, false)
            .pop()
            .unwrap_or_else(|| unreachable_modem(n));
        modem.imei = imei.to_string();
        modem.ip = ext_ip.to_string();
        state.modems.push(modem);
    }

    /// Unplugs the real modem with this IMEI: it leaves the status list (its ports stay
    /// stored, as on a box whose modem dropped off the USB bus).
    pub fn remove_modem(&self, imei: &str) -> Result<(), SimError> {
        let mut state = self.sim.state();
        let before = state.modems.len();
        state.modems.retain(|m| m.imei != imei);
        match state.modems.len() < before {
            true => Ok(()),
            false => Err(SimError::NoSuchModem),
        }
    }

    /// How many free ports (pairs, on a pool box) `get_free_tcp_ports` lists at most from
    /// now on (default 10); 0 or 1 is a box that has run out of ports.
    pub fn set_free_ports_offered(&self, count: usize) {
        self.sim.state().free_ports_offered = count;
    }

    /// The box's quirks now.
    pub fn quirks(&self) -> Quirks {
        self.sim.state().quirks.clone()
    }

    /// Changes the box's quirks from now on (ports already stored stay as they are).
    pub fn set_quirks(&self, quirks: Quirks) {
        self.sim.state().quirks = quirks;
    }

    /// A fault of one write endpoint (`None` clears it); see [`WriteFault`].
    pub fn set_write_fault(&self, fault: Option<WriteFault>) {
        self.sim.state().write_fault = fault;
    }

    /// Input a real box would not take, oldest first (see the crate's `inspect`): a test
    /// that drives a client asserts this stays empty.
    pub fn violations(&self) -> Vec<String> {
        self.sim.state().violations.clone()
    }

    /// Every `store_port` `data` document received, oldest first.
    pub fn store_bodies(&self) -> Vec<Value> {
        self.sim.state().store_bodies.clone()
    }

    /// Every authenticated API call with the IMEI, NICK or port id its query named.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.sim.state().call_log.clone()
    }

    /// Replaces `port_id`'s `bandwidth_report_all` entry with `entry` (the counters as a
    /// test wants them), also for a port id the box does not have.
    pub fn set_bandwidth(&self, port_id: &str, entry: Value) {
        self.sim
            .state()
            .bandwidth_override
            .insert(port_id.to_string(), entry);
    }

    /// Whether `store_port` of an existing portID replaces the whole record, clearing the
    /// optional fields it leaves out (see `SimConfig::store_port_replaces`).
    pub fn set_store_port_replaces(&self, replaces: bool) {
        self.sim.state().store_port_replaces = replaces;
    }

    /// Snapshots of every stored port.
    pub fn ports(&self) -> Vec<SimPort> {
        self.sim
            .state()
            .ports
            .values()
            .map(|p| p.snapshot())
            .collect()
    }

    /// The ports `list_ports_json` shows right now (a late write not yet among them).
    pub fn listed_ports(&self) -> Vec<SimPort> {
        self.sim
            .state()
            .visible_ports()
            .iter()
            .map(|p| p.snapshot())
            .collect()
    }

    /// Snapshot of one port.
    pub fn port(&self, port_id: &str) -> Option<SimPort> {
        self.sim.state().ports.get(port_id).map(|p| p.snapshot())
    }

    /// Stores a port Farmhand did not create (random id, free TCP ports, random
    /// credentials, `OWNER` "manual"); not applied — call [`SimHandle::apply_port`].
    pub fn add_foreign_port(&self, imei: &str, port_name: &str) -> Result<SimPort, SimError> {
        let used = self.sim.state().used_tcp_ports("");
        let ports = listeners::free_ports(self.sim.config.proxy_ip, 2, &used)
            .map_err(|source| SimError::Bind { port: 0, source })?;
        let [http_port, socks_port] = ports[..] else {
            return Err(SimError::InvalidData("no free TCP ports".into()));
        };
        let input = PortInput {
            imei: imei.to_string(),
            port_id: format!("port{}", util::random_hex(5)),
            port_name: port_name.to_string(),
            login: format!("u{}", util::random_hex(3)),
            password: util::random_hex(6),
            http_port,
            socks_port,
            valid_before: None,
            quota: None,
            quota_type: None,
            quota_direction: None,
            bandlimin: None,
            bandlimout: None,
        };
        let port_id = input.port_id.clone();
        let mut state = self.sim.state();
        state.store_as_asked(input, self.sim.local_addr.port())?;
        let port = state.ports.get_mut(&port_id).ok_or(SimError::NoSuchPort)?;
        port.foreign = true;
        port.owner = "manual".to_string();
        Ok(port.snapshot())
    }

    /// Sets a port's expiry as the box shows it (box-local `YYYY-MM-DDTHH:MM[:SS]`): a test
    /// knob for "this port's expiry has passed" without waiting for it.
    pub fn set_valid_before(&self, port_id: &str, stamp: &str) -> Result<(), SimError> {
        let mut state = self.sim.state();
        let port = state.ports.get_mut(port_id).ok_or(SimError::NoSuchPort)?;
        port.valid_before = stamp.to_string();
        Ok(())
    }

    /// Makes a stored port live, as `apply_port` does.
    pub async fn apply_port(&self, port_id: &str) -> Result<(), SimError> {
        listeners::apply_port(&self.sim, port_id).await
    }

    /// Removes a port and closes its listeners, as `purge_port` does.
    pub async fn purge_port(&self, port_id: &str) -> Result<(), SimError> {
        listeners::purge_port(&self.sim, port_id).await
    }

    /// Authenticated ProxySmart API calls to `path` (e.g. "/crud/store_port") since start
    /// or the last [`SimHandle::reset_counters`]; faulted calls count, refused ones do not.
    pub fn api_calls(&self, path: &str) -> usize {
        self.sim.state().api_calls.get(path).copied().unwrap_or(0)
    }

    /// Every path's authenticated API call count.
    pub fn all_api_calls(&self) -> HashMap<String, usize> {
        self.sim.state().api_calls.clone()
    }

    /// Zeroes the API call counts and empties the call log.
    pub fn reset_counters(&self) {
        let mut state = self.sim.state();
        state.api_calls.clear();
        state.call_log.clear();
    }

    /// Zeroes every port's traffic counters (the nightly reset).
    pub fn reset_traffic(&self) {
        self.sim
            .state()
            .ports
            .values()
            .for_each(|p| p.counters.reset());
    }

    /// Resolves once the simulator has shut down (after its token was cancelled) and every
    /// listener and connection it started is closed.
    pub async fn stopped(&self) {
        self.sim.tracker.wait().await;
    }

    fn with_modem(&self, imei: &str, change: impl FnOnce(&mut ModemState)) -> Result<(), SimError> {
        change(self.sim.state().modem_mut(imei)?);
        Ok(())
    }
}

/// A modem for `add_modem` when the seed has none (never: `seed::modems(n)` has n).
fn unreachable_modem(n: usize) -> ModemState {
    ModemState {
        imei: String::new(),
        nick: format!("DE_{n}"),
        model: String::new(),
        model_shown: String::new(),
        phone: String::new(),
        iccid: String::new(),
        usb_id: String::new(),
        dev: String::new(),
        carrier: String::new(),
        ip: String::new(),
        online: true,
        signal: String::new(),
        rotating: false,
        rotations: 0,
        same_ip_next: false,
        position: u32::try_from(n).unwrap_or(u32::MAX),
        sim_status: "OK".to_string(),
        redirect_imposed: false,
        auto_rotation_min: 0,
        rebooting: false,
        path: Default::default(),
    }
}
