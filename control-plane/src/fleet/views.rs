//! What the fleet view hands out and takes in: an agent as the plane knows it
//! ([`LiveAgent`]), a modem as the API lists it ([`ModemView`]) and the filter orders use,
//! a reservation, an outage's clocks, and the news an update makes (duplicates, who holds
//! an IMEI, health crossings).

use super::ModemTransition;
use farmhand_protocol::{BoxCapabilities, HealthResource, HostHealth, Modem, Site};
use std::collections::BTreeMap;
use std::time::Instant;
use time::OffsetDateTime;

/// What the plane currently knows about one agent.
#[derive(Debug, Clone, Default)]
pub struct LiveAgent {
    /// A session is authenticated and frames arrive.
    pub connected: bool,
    /// When the last frame arrived.
    pub last_seen: Option<OffsetDateTime>,
    /// The agent's software version from `hello`.
    pub agent_version: Option<String>,
    /// The protocol version negotiated for its session.
    pub protocol: Option<u32>,
    /// When its current session opened (kept while disconnected: when the last one did).
    pub connected_since: Option<OffsetDateTime>,
    /// The site from the last inventory.
    pub site: Option<Site>,
    /// Whether the agent can read ProxySmart.
    pub proxysmart_reachable: bool,
    /// Modems by IMEI (the last known state while disconnected).
    pub modems: BTreeMap<String, Modem>,
    /// The seller's cap on marketplace ports per modem from the last inventory (`None`: no
    /// cap announced).
    pub max_ports_per_modem: Option<u32>,
    /// What the box was seen to honour (its agent's box profile, and what its refusals
    /// taught the plane).
    pub capabilities: BoxCapabilities,
    /// The box's own health, as last reported.
    pub health: Option<HostHealth>,
    /// The resources past the plane's health limits: while any is, the box gets no new
    /// allocation (its existing ones stay).
    pub held_back: Vec<(HealthResource, String)>,
    /// Enrolled under `[enroll] require_approval` and not approved yet: no orders.
    pub awaiting_approval: bool,
    /// The seller's policy forbids probing this box's ports (`probe` skips them).
    pub probes_refused: bool,
    /// The cluster node holding its session when that is another node (`fleet::mirror`);
    /// `None` for a session here (and always on a single node).
    pub node: Option<String>,
    pub(super) session_id: Option<String>,
}

impl LiveAgent {
    /// Allocations one modem of this agent may hold: the plane's `capacity`, or the seller's
    /// cap when that is lower.
    pub fn capacity(&self, plane: u32) -> u32 {
        self.max_ports_per_modem.map_or(plane, |cap| cap.min(plane))
    }

    /// Whether this box can honour an order with `filter`'s needs: not when its profile
    /// says it drops what the order needs (unknown counts as able; the agent checks).
    pub fn can_honour(&self, filter: &ModemFilter) -> bool {
        !(filter.needs_quota && self.capabilities.quota == Some(false)
            || filter.needs_speed_limit && self.capabilities.speed_limit == Some(false))
    }
}

/// Filters for modem queries and allocation.
#[derive(Debug, Clone, Default)]
pub struct ModemFilter {
    /// Site country (ISO alpha-2, case-insensitive).
    pub country: Option<String>,
    /// Carrier (case-insensitive).
    pub carrier: Option<String>,
    /// Exact IMEI.
    pub imei: Option<String>,
    /// Modem online state.
    pub online: Option<bool>,
    /// Whether a new allocation could be placed on it now.
    pub available: Option<bool>,
    /// The order has a traffic quota: only boxes not known to drop quotas.
    pub needs_quota: bool,
    /// The order has a speed limit: only boxes not known to drop speed limits.
    pub needs_speed_limit: bool,
}

/// One modem as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ModemView {
    /// IMEI.
    pub imei: String,
    /// The agent reporting it.
    pub agent_id: String,
    /// Operator name.
    pub carrier: Option<String>,
    /// Site country.
    pub country: Option<String>,
    /// Site city.
    pub city: Option<String>,
    /// Current external IP.
    pub ext_ip: Option<String>,
    /// Whether ProxySmart reports it online.
    pub online: bool,
    /// Signal strength.
    pub signal: Option<i32>,
    /// Modem model.
    pub model: Option<String>,
    /// Live allocations on it (pending, active, releasing).
    pub active_allocations: u32,
    /// Allocations allowed on it: the plane's `modem_capacity`, or the seller's
    /// `max_ports_per_modem` its agent announced when that is lower.
    pub capacity: u32,
    /// Whether a new allocation could be placed on it now.
    pub available: bool,
    /// Why it cannot be sold although online (a SIM out of credit, a dead SIM), if so.
    pub not_sellable: Option<&'static str>,
    /// `SimStatus` as the box reports it.
    pub sim_status: Option<String>,
    /// The network type, e.g. "LTE".
    pub network_type: Option<String>,
    /// The BOX rotates this modem's IP by itself this often, seconds (`null`: unknown,
    /// 0: it does not).
    pub auto_rotation_s: Option<u64>,
    /// Another agent reports the same IMEI and no admin named this one its owner (or one
    /// named another): not sold until resolved (`POST /v1/modems/{imei}/resolve`).
    pub duplicate_identity: bool,
    /// Its SIM swaps, re-plugs and moves between boxes seen by this node since it started,
    /// oldest first (at most 10; ICCIDs by their last four digits).
    pub identity_changes: Vec<super::IdentityChange>,
}

/// A slot reserved on a modem for a new allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The agent.
    pub agent_id: String,
    /// The modem.
    pub imei: String,
    /// Its carrier.
    pub carrier: Option<String>,
    /// The site country.
    pub country: Option<String>,
    /// Where buyers connect.
    pub public_host: String,
}

/// How long an allocation's modem and agent have been down (see [`Fleet::outage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outage {
    /// Since when the modem has been reported offline, or missing from the inventory of
    /// its agent, without interruption; `None` while online (or unknown).
    pub modem_offline_since: Option<Instant>,
    /// Since when the modem's agent has been disconnected without interruption (since the
    /// plane started for an agent that has not connected since); `None` while connected.
    pub agent_away_since: Option<Instant>,
}

/// An IMEI reported by more than one agent (`Fleet::replace_inventory`, `apply_changes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The IMEI.
    pub imei: String,
    /// Every agent reporting it.
    pub agent_ids: Vec<String>,
}

/// What an inventory or change report did beyond updating the view: the news the plane
/// tells (`Fleet::replace_inventory`, `Fleet::apply_changes`).
#[derive(Debug, Default)]
pub struct Update {
    /// IMEIs newly reported by another agent too.
    pub duplicates: Vec<Duplicate>,
    /// Modems that went online or offline.
    pub transitions: Vec<ModemTransition>,
    /// Whether modems joined or left the agent, or their capacity changed (a store that
    /// keeps modems records them again: `Store::record_modems`).
    pub modems_changed: bool,
    /// SIM swaps, re-plugs and moves to this agent.
    pub identity_changes: Vec<super::IdentityChange>,
}

/// Who reports an IMEI (`Fleet::locate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// One agent, or the owner an admin named; whether it is connected.
    Agent(String, bool),
    /// Several agents and no owner named: nothing is done to it until an admin resolves.
    Contested(Vec<String>),
}

/// A box's health crossed a limit (`Fleet::set_health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCrossing {
    /// The resource.
    pub resource: HealthResource,
    /// Now past the limit (true) or back within it (false).
    pub past: bool,
    /// Why, for people (past), or what it is now (back).
    pub reason: String,
}
