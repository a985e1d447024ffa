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

mod health;
mod history;
mod identity;
mod index;
mod listing;
mod mirror;
mod transitions;
mod views;

pub use mirror::AgentSnapshot;
pub use views::*;

pub use history::{ModemHistory, OnlineChange, RotationReceipt};
pub use identity::{IdentityChange, IdentityChangeKind};
pub use transitions::ModemTransition;

use crate::clock::Clock;
use farmhand_protocol::{HealthLimits, Inventory, Modem, ModemsChanged};
use index::AgentWrite;
use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;
use tokio::sync::Notify;

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
    /// Each IMEI's SIM, USB path and agent, and their changes.
    identities: identity::Identities,
    /// Recent online changes and rotations per modem (`history`).
    histories: history::Histories,
}

impl Inner {
    /// Compares the identity of `imeis` of `agent_id`, as its view has them now, with
    /// `old` (their previous reports by this agent, for those it listed before).
    fn identities_seen(
        &mut self,
        agent_id: &str,
        imeis: &[String],
        old: &BTreeMap<String, Modem>,
        at: time::OffsetDateTime,
    ) -> Vec<IdentityChange> {
        let mut changes = Vec::new();
        for imei in imeis {
            let before = old.get(imei);
            // New to this agent: another agent that listed it and holds no session now.
            let moved_from = match before {
                Some(_) => None,
                None => self.holders(imei).into_iter().find(|other| {
                    other != agent_id && self.agents.get(other).is_some_and(|a| !a.connected)
                }),
            };
            let Inner {
                agents, identities, ..
            } = &mut *self;
            let Some(modem) = agents.get(agent_id).and_then(|a| a.modems.get(imei)) else {
                continue;
            };
            changes.extend(identities.observe(agent_id, modem, before, moved_from.as_deref(), at));
        }
        changes
    }
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

/// What an inventory or change report did to an agent's modems, for `Fleet::settle`.
struct Changes {
    /// IMEIs no longer reported.
    gone: Vec<String>,
    /// IMEIs reported now, with their online state.
    seen: Vec<(String, bool)>,
    /// The modems replaced, as they were.
    old: BTreeMap<String, Modem>,
    transitions: Vec<ModemTransition>,
    modems_changed: bool,
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
    /// (agent, IMEI) whose allocations should be probed now (`probe`), and its wake-up.
    probe_requests: std::sync::Mutex<Vec<(String, String)>>,
    probe_wanted: Notify,
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
            probe_requests: std::sync::Mutex::default(),
            probe_wanted: Notify::new(),
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

    /// A session of `agent_id` authenticated, speaking `protocol`.
    pub fn connected(&self, agent_id: &str, session_id: &str, agent_version: &str, protocol: u32) {
        let mut inner = self.write_agent(agent_id);
        let agent = inner.agents.entry(agent_id.to_string()).or_default();
        let now = self.clock.now();
        agent.connected = true;
        agent.node = None;
        agent.session_id = Some(session_id.to_string());
        agent.agent_version = Some(agent_version.to_string());
        agent.protocol = Some(protocol);
        agent.connected_since = Some(now);
        agent.last_seen = Some(now);
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
                agent.node = None;
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
        inner.histories.forget(agent_id);
        // It will not come back: its allocations are away from now (if not already).
        let now = self.clock.instant();
        inner.away_since.entry(agent_id.to_string()).or_insert(now);
    }

    /// Notes a finished rotation of `agent_id`'s modem `imei` (the console's modem page).
    pub fn note_rotation(&self, agent_id: &str, imei: &str, receipt: RotationReceipt) {
        self.write().histories.rotated(agent_id, imei, receipt);
    }

    /// `agent_id`'s modem `imei`'s recent online changes and rotations seen by this node.
    pub fn modem_history(&self, agent_id: &str, imei: &str) -> ModemHistory {
        self.read().histories.of(agent_id, imei)
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
        let capacity_changed = agent.max_ports_per_modem != inventory.max_ports_per_modem;
        agent.max_ports_per_modem = inventory.max_ports_per_modem;
        agent.capabilities = inventory.capabilities.unwrap_or_default();
        agent.probes_refused = inventory.probes_refused;
        let modems: BTreeMap<String, Modem> = inventory
            .modems
            .into_iter()
            .map(|m| (m.imei.clone(), m))
            .collect();
        let old = std::mem::replace(&mut agent.modems, modems);
        let modems_changed = capacity_changed || !old.keys().eq(agent.modems.keys());
        let transitions = transitions::between(&old, &agent.modems, agent.site.as_ref());
        let seen: Vec<(String, bool)> = agent
            .modems
            .values()
            .map(|m| (m.imei.clone(), m.online))
            .collect();
        let gone: Vec<String> = old
            .keys()
            .filter(|imei| !seen.iter().any(|(i, _)| i == *imei))
            .cloned()
            .collect();
        let changes = Changes {
            gone,
            seen,
            old,
            transitions,
            modems_changed,
        };
        self.settle(inner, agent_id, changes, before, now)
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
        let mut modems_changed = false;
        for imei in &changes.removed {
            if let Some(modem) = agent.modems.remove(imei) {
                old.insert(imei.clone(), modem);
                modems_changed = true;
            }
        }
        let seen: Vec<(String, bool)> = changes
            .changed
            .iter()
            .map(|m| (m.imei.clone(), m.online))
            .collect();
        for modem in changes.changed {
            match agent.modems.insert(modem.imei.clone(), modem) {
                Some(was) => {
                    old.insert(was.imei.clone(), was);
                }
                None => modems_changed = true,
            }
        }
        let transitions = transitions::between(&old, &agent.modems, agent.site.as_ref());
        let changes = Changes {
            gone: changes.removed,
            seen,
            old,
            transitions,
            modems_changed,
        };
        self.settle(inner, agent_id, changes, before, now)
    }

    /// The rest of an update of `agent_id` whose modems `inner` holds now: the outage
    /// clocks of the modems gone and seen, identity changes, online history, and the news.
    fn settle(
        &self,
        mut inner: AgentWrite<'_>,
        agent_id: &str,
        changes: Changes,
        before: Vec<Duplicate>,
        now: Instant,
    ) -> Update {
        let mut changed = false;
        for imei in &changes.gone {
            changed |= inner.modem_gone(agent_id, imei, now);
        }
        let imeis: Vec<String> = changes.seen.iter().map(|(imei, _)| imei.clone()).collect();
        for (imei, online) in changes.seen {
            changed |= inner.modem_seen(agent_id, &imei, online, now);
        }
        let at = self.clock.now();
        let identity_changes = inner.identities_seen(agent_id, &imeis, &changes.old, at);
        for t in &changes.transitions {
            inner
                .histories
                .went(agent_id, &t.modem.imei, t.modem.online, at);
        }
        drop(inner);
        if changed {
            self.health.notify_one();
        }
        Update {
            duplicates: self.new_duplicates(agent_id, &before),
            transitions: changes.transitions,
            modems_changed: changes.modems_changed,
            identity_changes,
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

    /// Asks for the allocations on `imei` of `agent_id` to be probed now (its SIM was
    /// swapped: the buyer's egress may have changed).
    pub fn request_probe(&self, agent_id: &str, imei: &str) {
        // Nobody may be taking them (probes off): a bounded list, the newest dropped.
        const MAX_REQUESTS: usize = 1024;
        let mut requests = self
            .probe_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if requests.len() < MAX_REQUESTS {
            requests.push((agent_id.to_string(), imei.to_string()));
        }
        drop(requests);
        self.probe_wanted.notify_one();
    }

    /// Notified after [`Fleet::request_probe`].
    pub fn probe_wanted(&self) -> &Notify {
        &self.probe_wanted
    }

    /// The modems [`Fleet::request_probe`] named since the last call.
    pub fn take_probe_requests(&self) -> Vec<(String, String)> {
        std::mem::take(
            &mut *self
                .probe_requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The live state of one agent.
    pub fn agent(&self, agent_id: &str) -> Option<LiveAgent> {
        self.read().agents.get(agent_id).cloned()
    }

    /// Whether `agent_id` is connected (here, or mirrored from the node holding it).
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.read()
            .agents
            .get(agent_id)
            .is_some_and(|a| a.connected)
    }

    /// Number of connected agents.
    pub fn connected_count(&self) -> usize {
        self.read().agents.values().filter(|a| a.connected).count()
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

#[cfg(test)]
mod tests;
