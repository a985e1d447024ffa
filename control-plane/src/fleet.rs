//! The live view of the fleet, in memory: per agent whether it is connected, when a frame
//! last arrived, its site and its modems by IMEI (fed by gateway sessions from `inventory`
//! and `modems_changed`), plus the number of live allocations per modem. Read by the REST
//! API and the allocator, which reserves capacity here atomically so two concurrent
//! requests never pick the same last slot.
//!
//! It also remembers since when each modem has been offline (or missing from its agent's
//! inventory) and each agent disconnected, without interruption — what automatic
//! replacement waits on ([`Fleet::outage`]); coming back resets the clock, so a flapping
//! modem never looks long-dead. Those transitions wake [`Fleet::health_changes`].
//!
//! A modem's capacity is the plane's `modem_capacity`, lowered to the seller's
//! `max_ports_per_modem` when its agent's inventory announces one ([`LiveAgent::capacity`]):
//! a slot the agent would refuse with `policy_denied` is never listed or reserved.

mod index;
mod transitions;

pub use transitions::ModemTransition;

use crate::clock::Clock;
use farmhand_protocol::{
    BoxCapabilities, HealthLimits, HealthResource, HostHealth, Inventory, Modem, ModemsChanged,
    Site,
};
use index::AgentWrite;
use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// What the plane currently knows about one agent.
#[derive(Debug, Clone, Default)]
pub struct LiveAgent {
    /// A session is authenticated and frames arrive.
    pub connected: bool,
    /// When the last frame arrived.
    pub last_seen: Option<OffsetDateTime>,
    /// The agent's software version from `hello`.
    pub agent_version: Option<String>,
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
    session_id: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// Per-modem state is kept per (agent, IMEI): an IMEI is a claim an agent makes, and two
/// agents claiming one (a cloned or re-enrolled box, or an impostor) must not share a load,
/// an offline clock or a sale.
#[derive(Debug, Default)]
struct Inner {
    agents: HashMap<String, LiveAgent>,
    /// Agent id → IMEI → live allocations on that agent's modem.
    load: HashMap<String, HashMap<String, u32>>,
    /// Available modems by pool and IMEI holders, for `reserve` and `locate` (see `index`).
    index: index::Index,
    /// Agent id → IMEI → since when that agent's modem is offline or gone from its
    /// inventory.
    offline_since: HashMap<String, HashMap<String, Instant>>,
    /// Agent id → since when it is disconnected.
    away_since: HashMap<String, Instant>,
    /// IMEI → the agent an admin named its owner (`POST /v1/modems/{imei}/resolve`): only
    /// that agent's copy is sold, whoever else reports it.
    owners: HashMap<String, String>,
}

impl Inner {
    /// Notes a modem's reported state; true when it went offline or came back.
    fn modem_seen(&mut self, agent_id: &str, imei: &str, online: bool, now: Instant) -> bool {
        if online {
            let clocks = self.offline_since.get_mut(agent_id);
            clocks.is_some_and(|c| c.remove(imei).is_some())
        } else {
            self.modem_gone(agent_id, imei, now)
        }
    }

    /// Starts the modem's offline clock unless it is running; true when it started.
    fn modem_gone(&mut self, agent_id: &str, imei: &str, now: Instant) -> bool {
        let clocks = self.offline_since.entry(agent_id.to_string()).or_default();
        if clocks.contains_key(imei) {
            return false;
        }
        clocks.insert(imei.to_string(), now);
        true
    }

    fn offline_since(&self, agent_id: &str, imei: &str) -> Option<Instant> {
        self.offline_since.get(agent_id)?.get(imei).copied()
    }

    /// Live allocations on `imei` of `agent_id`.
    pub(super) fn load_of(&self, agent_id: &str, imei: &str) -> u32 {
        self.load
            .get(agent_id)
            .and_then(|m| m.get(imei))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `agent_id`'s copy of `imei` is contested: another agent reports the same IMEI
    /// and no admin has named an owner, or an admin named another agent.
    pub(super) fn contested(&self, agent_id: &str, imei: &str) -> bool {
        match self.owners.get(imei) {
            Some(owner) => owner != agent_id,
            None => self.holders(imei).len() > 1,
        }
    }
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

/// The live fleet view.
#[derive(Debug)]
pub struct Fleet {
    inner: RwLock<Inner>,
    capacity: u32,
    /// What a box must have left to get new orders.
    limits: HealthLimits,
    /// When this view was created: agents not seen since are away since then.
    started: Instant,
    /// Notified when a modem goes offline or comes back, or an agent leaves or returns.
    health: Notify,
    /// The plane's clock (outage clocks run on it; the allocator shares it).
    clock: Clock,
}

impl Fleet {
    /// An empty view where each modem takes `capacity` allocations and boxes past the
    /// default health limits get none.
    pub fn new(capacity: u32) -> Self {
        Self::with_limits(capacity, HealthLimits::DEFAULT, Clock::system())
    }

    /// An empty view with these health limits (`[health]`), on `clock`.
    pub fn with_limits(capacity: u32, limits: HealthLimits, clock: Clock) -> Self {
        Fleet {
            limits,
            inner: RwLock::default(),
            capacity,
            started: clock.instant(),
            health: Notify::new(),
            clock,
        }
    }

    /// The plane's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access for a change to `agent_id` that keeps the `reserve` index in step.
    fn write_agent<'a>(&'a self, agent_id: &'a str) -> AgentWrite<'a> {
        AgentWrite::new(self.write(), agent_id, self.capacity)
    }

    /// A session of `agent_id` authenticated.
    pub fn connected(&self, agent_id: &str, session_id: &str, agent_version: &str) {
        let mut inner = self.write_agent(agent_id);
        let agent = inner.agents.entry(agent_id.to_string()).or_default();
        agent.connected = true;
        agent.session_id = Some(session_id.to_string());
        agent.agent_version = Some(agent_version.to_string());
        agent.last_seen = Some(self.clock.now());
        inner.away_since.remove(agent_id);
        drop(inner);
        self.health.notify_one();
    }

    /// Whether `agent_id` waits for an admin's approval before it gets orders.
    pub fn set_awaiting_approval(&self, agent_id: &str, awaiting: bool) {
        let mut inner = self.write_agent(agent_id);
        if let Some(agent) = inner.agents.get_mut(agent_id) {
            agent.awaiting_approval = awaiting;
        }
    }

    /// Session `session_id` of `agent_id` ended (ignored if a newer session took over).
    pub fn disconnected(&self, agent_id: &str, session_id: &str) {
        let mut inner = self.write_agent(agent_id);
        if let Some(agent) = inner.agents.get_mut(agent_id) {
            if agent.session_id.as_deref() == Some(session_id) {
                agent.connected = false;
                agent.session_id = None;
                let now = self.clock.instant();
                inner.away_since.insert(agent_id.to_string(), now);
                drop(inner);
                self.health.notify_one();
            }
        }
    }

    /// Drops everything known about a revoked agent, so its modems are no longer listed.
    pub fn forget(&self, agent_id: &str) {
        let mut inner = self.write_agent(agent_id);
        inner.agents.remove(agent_id);
        inner.offline_since.remove(agent_id);
        // It will not come back: its allocations are away from now (if not already).
        let now = self.clock.instant();
        inner.away_since.entry(agent_id.to_string()).or_insert(now);
    }

    /// A frame arrived from `agent_id`.
    pub fn touch(&self, agent_id: &str) {
        if let Some(agent) = self.write().agents.get_mut(agent_id) {
            agent.last_seen = Some(self.clock.now());
        }
    }

    /// Replaces everything known about the agent's box; returns the IMEIs it reports that
    /// another agent reports too, newly so.
    pub fn replace_inventory(&self, agent_id: &str, inventory: Inventory) -> Update {
        let now = self.clock.instant();
        let before = self.duplicates_of(agent_id);
        let mut inner = self.write_agent(agent_id);
        let agent = inner.agents.entry(agent_id.to_string()).or_default();
        agent.site = Some(inventory.site);
        agent.proxysmart_reachable = inventory.proxysmart_reachable;
        // The whole view is replaced: an inventory without the field lifts an earlier cap.
        agent.max_ports_per_modem = inventory.max_ports_per_modem;
        agent.capabilities = inventory.capabilities.unwrap_or_default();
        let modems: BTreeMap<String, Modem> = inventory
            .modems
            .into_iter()
            .map(|m| (m.imei.clone(), m))
            .collect();
        let old = std::mem::replace(&mut agent.modems, modems);
        let transitions = transitions::between(&old, &agent.modems, agent.site.as_ref());
        let seen: Vec<(String, bool)> = agent
            .modems
            .values()
            .map(|m| (m.imei.clone(), m.online))
            .collect();
        let mut changed = false;
        for imei in old
            .keys()
            .filter(|imei| !seen.iter().any(|(i, _)| i == *imei))
        {
            changed |= inner.modem_gone(agent_id, imei, now);
        }
        for (imei, online) in seen {
            changed |= inner.modem_seen(agent_id, &imei, online, now);
        }
        drop(inner);
        if changed {
            self.health.notify_one();
        }
        Update {
            duplicates: self.new_duplicates(agent_id, &before),
            transitions,
        }
    }

    /// Applies a change report: the modem transitions it makes and the IMEIs newly reported
    /// by another agent too.
    pub fn apply_changes(&self, agent_id: &str, changes: ModemsChanged) -> Update {
        let now = self.clock.instant();
        let before = self.duplicates_of(agent_id);
        let mut inner = self.write_agent(agent_id);
        let agent = inner.agents.entry(agent_id.to_string()).or_default();
        agent.proxysmart_reachable = changes.proxysmart_reachable;
        let mut old = BTreeMap::new();
        for imei in &changes.removed {
            if let Some(modem) = agent.modems.remove(imei) {
                old.insert(imei.clone(), modem);
            }
        }
        let seen: Vec<(String, bool)> = changes
            .changed
            .iter()
            .map(|m| (m.imei.clone(), m.online))
            .collect();
        for modem in changes.changed {
            if let Some(was) = agent.modems.insert(modem.imei.clone(), modem) {
                old.insert(was.imei.clone(), was);
            }
        }
        let transitions = transitions::between(&old, &agent.modems, agent.site.as_ref());
        let mut changed = false;
        for imei in &changes.removed {
            changed |= inner.modem_gone(agent_id, imei, now);
        }
        for (imei, online) in seen {
            changed |= inner.modem_seen(agent_id, &imei, online, now);
        }
        drop(inner);
        if changed {
            self.health.notify_one();
        }
        Update {
            duplicates: self.new_duplicates(agent_id, &before),
            transitions,
        }
    }

    /// The IMEIs of `agent_id` that another agent reports too.
    fn duplicates_of(&self, agent_id: &str) -> Vec<Duplicate> {
        let inner = self.read();
        let Some(agent) = inner.agents.get(agent_id) else {
            return Vec::new();
        };
        agent
            .modems
            .keys()
            .filter_map(|imei| {
                let agent_ids = inner.holders(imei);
                (agent_ids.len() > 1).then(|| Duplicate {
                    imei: imei.clone(),
                    agent_ids,
                })
            })
            .collect()
    }

    /// The duplicates of `agent_id` now that were not in `before`.
    fn new_duplicates(&self, agent_id: &str, before: &[Duplicate]) -> Vec<Duplicate> {
        self.duplicates_of(agent_id)
            .into_iter()
            .filter(|d| !before.iter().any(|b| b.imei == d.imei))
            .collect()
    }

    /// Names `agent_id` the owner of `imei` (an admin resolved a duplicate): only its copy
    /// is sold from now on. Loaded from storage at start for every recorded owner.
    pub fn set_owner(&self, imei: &str, agent_id: &str) {
        let mut inner = self.write();
        inner.set_owner(imei, agent_id, self.capacity);
    }

    /// The agents reporting `imei` now.
    pub fn holders(&self, imei: &str) -> Vec<String> {
        self.read().holders(imei)
    }

    /// The health limits the plane applies (sent to agents in `welcome`).
    pub fn health_limits(&self) -> HealthLimits {
        self.limits
    }

    /// The box of `agent_id` reported its health: past a limit it gets no new allocation.
    /// Returns the crossings (a resource newly past its limit, or back within it).
    pub fn set_health(&self, agent_id: &str, health: HostHealth) -> Vec<HealthCrossing> {
        let mut past = health.past(&self.limits);
        // Two watched volumes are often one: one reason per resource.
        past.dedup_by_key(|(resource, _)| *resource);
        let mut inner = self.write_agent(agent_id);
        let Some(agent) = inner.agents.get_mut(agent_id) else {
            return Vec::new();
        };
        let mut crossings = Vec::new();
        for (resource, reason) in &past {
            if !agent.held_back.iter().any(|(r, _)| r == resource) {
                crossings.push(HealthCrossing {
                    resource: *resource,
                    past: true,
                    reason: reason.clone(),
                });
            }
        }
        for (resource, _) in &agent.held_back {
            if !past.iter().any(|(r, _)| r == resource) {
                crossings.push(HealthCrossing {
                    resource: *resource,
                    past: false,
                    reason: format!("{} is back within the limit", resource.as_str()),
                });
            }
        }
        agent.held_back = past;
        agent.health = Some(health);
        crossings
    }

    /// How many connected boxes are held back, per resource.
    pub fn held_back_counts(&self) -> [(HealthResource, usize); 2] {
        let inner = self.read();
        let count = |resource: HealthResource| {
            inner
                .agents
                .values()
                .filter(|a| a.connected && a.held_back.iter().any(|(r, _)| *r == resource))
                .count()
        };
        [
            (HealthResource::Disk, count(HealthResource::Disk)),
            (HealthResource::Memory, count(HealthResource::Memory)),
        ]
    }

    /// What the box of `agent_id` honours changed (its `capabilities` message).
    pub fn set_capabilities(&self, agent_id: &str, capabilities: BoxCapabilities) {
        let mut inner = self.write_agent(agent_id);
        if let Some(agent) = inner.agents.get_mut(agent_id) {
            agent.capabilities = capabilities;
        }
    }

    /// The box of `agent_id` refused `field` of a write (`box_refused_field`): orders that
    /// need it go elsewhere from now on, before its agent's own report arrives.
    pub fn learn_refusal(&self, agent_id: &str, field: &str) {
        let mut inner = self.write_agent(agent_id);
        if let Some(agent) = inner.agents.get_mut(agent_id) {
            match field {
                "bw_quota" => agent.capabilities.quota = Some(false),
                "bandlimin" | "bandlimout" => agent.capabilities.speed_limit = Some(false),
                _ => {}
            }
        }
    }

    /// How often the box rotates modem `imei` of `agent_id` by itself, seconds (0: never).
    pub fn box_rotation_s(&self, agent_id: &str, imei: &str) -> Option<u64> {
        let inner = self.read();
        inner
            .agents
            .get(agent_id)?
            .modems
            .get(imei)?
            .auto_rotation_s
    }

    /// How long the modem `imei` of `agent_id` and that agent have been down. A modem its
    /// agent's inventory no longer lists counts as offline (unplugged, or ProxySmart
    /// dropped it) from when that was first noticed; while ProxySmart is unreachable the
    /// last known state stands (an API outage is not a modem outage).
    pub fn outage(&self, agent_id: &str, imei: &str) -> Outage {
        let now = self.clock.instant();
        let mut inner = self.write();
        let Some(agent) = inner.agents.get(agent_id) else {
            let away = inner.away_since.get(agent_id).copied();
            return Outage {
                modem_offline_since: inner.offline_since(agent_id, imei),
                agent_away_since: Some(away.unwrap_or(self.started)),
            };
        };
        let agent_away_since = (!agent.connected)
            .then(|| inner.away_since.get(agent_id).copied())
            .map(|away| away.unwrap_or(self.started));
        let listed = agent.modems.get(imei).map(|m| m.online);
        let has_inventory = agent.site.is_some();
        let modem_offline_since = match listed {
            Some(true) => None,
            Some(false) => {
                inner.modem_gone(agent_id, imei, now);
                inner.offline_since(agent_id, imei)
            }
            None if has_inventory => {
                inner.modem_gone(agent_id, imei, now);
                inner.offline_since(agent_id, imei)
            }
            None => inner.offline_since(agent_id, imei),
        };
        Outage {
            modem_offline_since,
            agent_away_since,
        }
    }

    /// Notified (one permit) when a modem goes offline or comes back, or an agent
    /// disconnects or connects: what the replacement sweeper waits on.
    pub fn health_changes(&self) -> &Notify {
        &self.health
    }

    /// The live state of one agent.
    pub fn agent(&self, agent_id: &str) -> Option<LiveAgent> {
        self.read().agents.get(agent_id).cloned()
    }

    /// Number of connected agents.
    pub fn connected_count(&self) -> usize {
        self.read().agents.values().filter(|a| a.connected).count()
    }

    /// Modems matching `filter`, ordered by agent then IMEI.
    pub fn modems(&self, filter: &ModemFilter) -> Vec<ModemView> {
        let inner = self.read();
        let mut out: Vec<ModemView> = inner
            .agents
            .iter()
            .flat_map(|(id, agent)| agent.modems.values().map(move |m| (id, agent, m)))
            .map(|(id, agent, modem)| self.view(&inner, id, agent, modem))
            .filter(|view| matches(filter, view))
            .collect();
        out.sort_by(|a, b| (&a.agent_id, &a.imei).cmp(&(&b.agent_id, &b.imei)));
        out
    }

    /// The modems of one agent, ordered by IMEI (without looking at the other agents').
    pub fn agent_modems(&self, agent_id: &str) -> Vec<ModemView> {
        let inner = self.read();
        let Some(agent) = inner.agents.get(agent_id) else {
            return Vec::new();
        };
        agent
            .modems
            .values()
            .map(|modem| self.view(&inner, agent_id, agent, modem))
            .collect()
    }

    /// The agent to act on `imei` through: its only reporter, or the owner an admin named
    /// (`None` when that owner does not report it now); contested while several report it
    /// and none was named.
    pub fn locate(&self, imei: &str) -> Option<Located> {
        let inner = self.read();
        let holders = inner.holders(imei);
        let connected = |id: &str| inner.agents.get(id).is_some_and(|a| a.connected);
        match (inner.owners.get(imei), holders.as_slice()) {
            (Some(owner), _) => holders
                .iter()
                .find(|h| *h == owner)
                .map(|h| Located::Agent(h.clone(), connected(h))),
            (None, []) => None,
            (None, [only]) => Some(Located::Agent(only.clone(), connected(only))),
            (None, _) => Some(Located::Contested(holders)),
        }
    }

    /// Picks the least-loaded available modem matching `filter` (then the lowest IMEI) and
    /// takes one slot on it. Looks at the first entry of each matching pool of the index,
    /// not at every modem.
    pub fn reserve(&self, filter: &ModemFilter) -> Option<Reservation> {
        let mut inner = self.write();
        let (agent_id, imei) = inner.pick(filter, self.capacity)?;
        let agent = inner.agents.get(&agent_id)?;
        let modem = agent.modems.get(&imei)?;
        let site = agent.site.as_ref()?;
        let chosen = Reservation {
            agent_id: agent_id.clone(),
            imei: imei.clone(),
            carrier: modem.carrier.clone(),
            country: Some(site.country.clone()),
            public_host: site.public_host.clone(),
        };
        inner.change_load(&agent_id, &imei, self.capacity, |n| *n += 1);
        Some(chosen)
    }

    /// Counts one more live allocation on `imei` of `agent_id` (used when rebuilding from
    /// storage).
    pub fn add_load(&self, agent_id: &str, imei: &str) {
        self.write()
            .change_load(agent_id, imei, self.capacity, |n| *n += 1);
    }

    /// One live allocation on `imei` of `agent_id` ended (released, failed or moved).
    pub fn release_load(&self, agent_id: &str, imei: &str) {
        self.write()
            .change_load(agent_id, imei, self.capacity, |n| *n = n.saturating_sub(1));
    }

    fn view(&self, inner: &Inner, agent_id: &str, agent: &LiveAgent, modem: &Modem) -> ModemView {
        let load = inner.load_of(agent_id, &modem.imei);
        let site = agent.site.as_ref();
        let duplicate_identity = inner.contested(agent_id, &modem.imei);
        let available = available(agent, modem, load, self.capacity) && !duplicate_identity;
        ModemView {
            imei: modem.imei.clone(),
            agent_id: agent_id.to_string(),
            carrier: modem.carrier.clone(),
            country: site.map(|s| s.country.clone()),
            city: site.and_then(|s| s.city.clone()),
            ext_ip: modem.ext_ip.clone(),
            online: modem.online,
            signal: modem.signal,
            model: modem.model.clone(),
            active_allocations: load,
            capacity: agent.capacity(self.capacity),
            available,
            not_sellable: modem.unsellable_reason(),
            sim_status: modem.sim_status.clone(),
            network_type: modem.network_type.clone(),
            auto_rotation_s: modem.auto_rotation_s,
            duplicate_identity,
        }
    }
}

/// Whether a new allocation could be placed on `modem` of `agent` now (`ModemView::available`
/// and the `reserve` index both ask this); `capacity` is the plane's, which the agent's
/// seller cap may lower.
fn available(agent: &LiveAgent, modem: &Modem, load: u32, capacity: u32) -> bool {
    agent.connected
        && agent.proxysmart_reachable
        && modem.online
        && modem.ext_ip.is_some()
        && modem.unsellable_reason().is_none()
        && agent.held_back.is_empty()
        && !agent.awaiting_approval
        && agent.site.is_some()
        && load < agent.capacity(capacity)
}

fn eq_ci(wanted: &Option<String>, actual: &Option<String>) -> bool {
    match wanted {
        None => true,
        Some(w) => actual.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(w)),
    }
}

fn matches(filter: &ModemFilter, view: &ModemView) -> bool {
    eq_ci(&filter.country, &view.country)
        && eq_ci(&filter.carrier, &view.carrier)
        && filter.imei.as_ref().is_none_or(|i| *i == view.imei)
        && filter.online.is_none_or(|o| o == view.online)
        && filter.available.is_none_or(|a| a == view.available)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modem(imei: &str, carrier: &str, online: bool) -> Modem {
        Modem {
            imei: imei.into(),
            nick: "n".into(),
            carrier: Some(carrier.into()),
            ext_ip: Some("198.51.100.1".into()),
            online,
            rotating: false,
            signal: Some(20),
            model: None,
            ..Modem::default()
        }
    }

    fn fleet_with(modems: Vec<Modem>) -> Fleet {
        let fleet = Fleet::new(1);
        fleet.connected("a1", "s1", "0.1.0");
        fleet.replace_inventory("a1", inventory(modems, None));
        fleet
    }

    fn inventory(modems: Vec<Modem>, max_ports_per_modem: Option<u32>) -> Inventory {
        let site = Site {
            public_host: "203.0.113.7".into(),
            country: "DE".into(),
            city: None,
        };
        Inventory {
            site,
            proxysmart_reachable: true,
            modems,
            ports: vec![],
            max_ports_per_modem,
            capabilities: None,
        }
    }

    #[test]
    fn the_sellers_cap_lowers_capacity_until_an_inventory_lifts_it() {
        let fleet = Fleet::new(3);
        fleet.connected("a1", "s1", "0.1.0");
        let modems = vec![modem("1", "O2", true), modem("2", "O2", true)];
        fleet.replace_inventory("a1", inventory(modems.clone(), Some(1)));
        let any = ModemFilter::default();
        let capacities = |f: &Fleet| -> Vec<(u32, bool)> {
            let views = f.modems(&any);
            views.iter().map(|v| (v.capacity, v.available)).collect()
        };
        assert_eq!(capacities(&fleet), [(1, true), (1, true)]);
        assert_eq!(fleet.reserve(&any).map(|r| r.imei), Some("1".into()));
        assert_eq!(fleet.reserve(&any).map(|r| r.imei), Some("2".into()));
        assert_eq!(
            fleet.reserve(&any),
            None,
            "the seller allows one port per modem"
        );
        assert_eq!(capacities(&fleet), [(1, false), (1, false)]);
        // A cap above the plane's changes nothing; no cap at all gives the plane's back.
        fleet.replace_inventory("a1", inventory(modems.clone(), Some(10)));
        assert_eq!(capacities(&fleet), [(3, true), (3, true)]);
        fleet.replace_inventory("a1", inventory(modems, None));
        assert_eq!(capacities(&fleet), [(3, true), (3, true)]);
        assert_eq!(fleet.reserve(&any).map(|r| r.imei), Some("1".into()));
    }

    #[test]
    fn reservation_takes_capacity_and_respects_filters() {
        let fleet = fleet_with(vec![
            modem("1", "Vodafone", true),
            modem("2", "O2", true),
            modem("3", "O2", false),
        ]);
        let by_carrier = ModemFilter {
            carrier: Some("vodafone".into()),
            ..Default::default()
        };
        assert_eq!(fleet.reserve(&by_carrier).map(|r| r.imei), Some("1".into()));
        assert_eq!(fleet.reserve(&by_carrier), None, "capacity 1 is used up");
        let by_country = ModemFilter {
            country: Some("de".into()),
            ..Default::default()
        };
        assert_eq!(fleet.reserve(&by_country).map(|r| r.imei), Some("2".into()));
        assert_eq!(fleet.reserve(&by_country), None, "modem 3 is offline");
        fleet.release_load("a1", "1");
        assert_eq!(
            fleet.reserve(&ModemFilter::default()).map(|r| r.imei),
            Some("1".into())
        );
    }

    #[test]
    fn disconnected_agents_and_unreachable_proxysmart_offer_nothing() {
        let fleet = fleet_with(vec![modem("1", "Vodafone", true)]);
        fleet.apply_changes(
            "a1",
            ModemsChanged {
                proxysmart_reachable: false,
                changed: vec![],
                removed: vec![],
            },
        );
        assert_eq!(fleet.reserve(&ModemFilter::default()), None);
        fleet.apply_changes(
            "a1",
            ModemsChanged {
                proxysmart_reachable: true,
                changed: vec![],
                removed: vec![],
            },
        );
        fleet.disconnected("a1", "other-session");
        assert_eq!(
            fleet.locate("1"),
            Some(Located::Agent("a1".into(), true)),
            "a stale session id is ignored"
        );
        fleet.disconnected("a1", "s1");
        assert_eq!(fleet.reserve(&ModemFilter::default()), None);
        assert_eq!(
            fleet.modems(&ModemFilter::default()).len(),
            1,
            "last known modems stay listed"
        );
        assert_eq!(fleet.locate("1"), Some(Located::Agent("a1".into(), false)));
    }

    #[test]
    fn orders_needing_a_limit_skip_boxes_that_drop_it_and_unsellable_modems_are_skipped() {
        let fleet = Fleet::new(5);
        for (agent, imei) in [("a1", "1"), ("a2", "2")] {
            fleet.connected(agent, "s", "0.1.0");
            fleet.replace_inventory(agent, inventory(vec![modem(imei, "O2", true)], None));
        }
        let quota = ModemFilter {
            needs_quota: true,
            ..Default::default()
        };
        assert_eq!(fleet.reserve(&quota).map(|r| r.agent_id), Some("a1".into()));
        fleet.release_load("a1", "1");
        fleet.learn_refusal("a1", "bw_quota");
        assert_eq!(fleet.reserve(&quota).map(|r| r.agent_id), Some("a2".into()));
        fleet.release_load("a2", "2");
        // An order without a quota may still go to a1.
        assert_eq!(
            fleet.reserve(&ModemFilter::default()).map(|r| r.agent_id),
            Some("a1".into())
        );
        fleet.release_load("a1", "1");
        // A box that announces it drops speed limits gets no speed-limited order.
        fleet.set_capabilities(
            "a2",
            BoxCapabilities {
                speed_limit: Some(false),
                ..Default::default()
            },
        );
        let both = ModemFilter {
            needs_quota: true,
            needs_speed_limit: true,
            ..Default::default()
        };
        assert_eq!(fleet.reserve(&both), None);
        // A SIM out of credit: online, but not sellable.
        let mut broke = modem("2", "O2", true);
        broke.redirect_imposed = Some(true);
        fleet.replace_inventory("a2", inventory(vec![broke], None));
        let views = fleet.modems(&ModemFilter::default());
        let view = views.iter().find(|v| v.imei == "2").unwrap();
        assert!(!view.available && view.not_sellable.is_some());
    }

    #[test]
    fn a_box_past_a_health_limit_gets_nothing_new_until_it_recovers() {
        let fleet = fleet_with(vec![modem("1", "O2", true)]);
        let health = |free_mb: u64| HostHealth {
            measured_at_ms: 0,
            load_centi: [0; 3],
            cpus: 1,
            memory_total_bytes: 1_000_000_000,
            memory_available_bytes: 500_000_000,
            disks: vec![farmhand_protocol::DiskHealth {
                role: "state".into(),
                mount: "/".into(),
                total_bytes: 10_000_000_000,
                available_bytes: free_mb * 1_000_000,
            }],
            uptime_s: 1,
            os: None,
            kernel: None,
        };
        assert!(fleet.set_health("a1", health(10_000)).is_empty());
        let crossed = fleet.set_health("a1", health(100));
        assert_eq!(crossed.len(), 1);
        assert!(crossed[0].past && crossed[0].resource == HealthResource::Disk);
        assert!(
            fleet.set_health("a1", health(90)).is_empty(),
            "once per crossing"
        );
        assert_eq!(fleet.reserve(&ModemFilter::default()), None);
        assert_eq!(fleet.held_back_counts()[0].1, 1);
        let back = fleet.set_health("a1", health(5_000));
        assert!(!back[0].past);
        assert!(fleet.reserve(&ModemFilter::default()).is_some());
    }

    fn changed(modems: Vec<Modem>, removed: Vec<String>) -> ModemsChanged {
        ModemsChanged {
            proxysmart_reachable: true,
            changed: modems,
            removed,
        }
    }

    #[test]
    fn outage_clocks_start_when_down_and_reset_when_back() {
        let fleet = fleet_with(vec![modem("1", "O2", true), modem("2", "O2", true)]);
        assert_eq!(fleet.outage("a1", "1"), Outage::default());
        fleet.apply_changes("a1", changed(vec![modem("1", "O2", false)], vec![]));
        let since = fleet
            .outage("a1", "1")
            .modem_offline_since
            .expect("offline");
        // Still offline: the clock keeps its start (a new report does not restart it).
        fleet.apply_changes("a1", changed(vec![modem("1", "O2", false)], vec![]));
        assert_eq!(fleet.outage("a1", "1").modem_offline_since, Some(since));
        // Back online (a flap): the clock is gone; down again, it starts again.
        fleet.apply_changes("a1", changed(vec![modem("1", "O2", true)], vec![]));
        assert_eq!(fleet.outage("a1", "1").modem_offline_since, None);
        fleet.apply_changes("a1", changed(vec![modem("1", "O2", false)], vec![]));
        assert!(fleet.outage("a1", "1").modem_offline_since >= Some(since));
        // A modem the inventory stops listing counts as offline.
        fleet.apply_changes("a1", changed(vec![], vec!["2".into()]));
        assert!(fleet.outage("a1", "2").modem_offline_since.is_some());
        // The agent's absence is its own clock; a returning session clears it.
        fleet.disconnected("a1", "s1");
        let away = fleet.outage("a1", "1");
        assert!(away.agent_away_since.is_some() && away.modem_offline_since.is_some());
        fleet.connected("a1", "s2", "0.1.0");
        assert_eq!(fleet.outage("a1", "1").agent_away_since, None);
        // An agent not seen since the plane started is away since then.
        assert!(fleet.outage("never", "9").agent_away_since.is_some());
    }
}
