//! The live view of the fleet, in memory: per agent whether it is connected, when a frame
//! last arrived, its site and its modems by IMEI (fed by gateway sessions from `inventory`
//! and `modems_changed`), plus the number of live allocations per modem. Read by the REST
//! API and the allocator, which reserves capacity here atomically so two concurrent
//! requests never pick the same last slot.

use farmhand_protocol::{Inventory, Modem, ModemsChanged, Site};
use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
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
    /// The site from the last inventory.
    pub site: Option<Site>,
    /// Whether the agent can read ProxySmart.
    pub proxysmart_reachable: bool,
    /// Modems by IMEI (the last known state while disconnected).
    pub modems: BTreeMap<String, Modem>,
    session_id: Option<String>,
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
    /// Allocations allowed on it.
    pub capacity: u32,
    /// Whether a new allocation could be placed on it now.
    pub available: bool,
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

#[derive(Debug, Default)]
struct Inner {
    agents: HashMap<String, LiveAgent>,
    load: HashMap<String, u32>,
}

/// The live fleet view.
#[derive(Debug)]
pub struct Fleet {
    inner: RwLock<Inner>,
    capacity: u32,
}

impl Fleet {
    /// An empty view where each modem takes `capacity` allocations.
    pub fn new(capacity: u32) -> Self {
        Fleet {
            inner: RwLock::default(),
            capacity,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A session of `agent_id` authenticated.
    pub fn connected(&self, agent_id: &str, session_id: &str, agent_version: &str) {
        let mut inner = self.write();
        let agent = inner.agents.entry(agent_id.to_string()).or_default();
        agent.connected = true;
        agent.session_id = Some(session_id.to_string());
        agent.agent_version = Some(agent_version.to_string());
        agent.last_seen = Some(crate::ids::now());
    }

    /// Session `session_id` of `agent_id` ended (ignored if a newer session took over).
    pub fn disconnected(&self, agent_id: &str, session_id: &str) {
        if let Some(agent) = self.write().agents.get_mut(agent_id) {
            if agent.session_id.as_deref() == Some(session_id) {
                agent.connected = false;
                agent.session_id = None;
            }
        }
    }

    /// Drops everything known about a revoked agent, so its modems are no longer listed.
    pub fn forget(&self, agent_id: &str) {
        self.write().agents.remove(agent_id);
    }

    /// A frame arrived from `agent_id`.
    pub fn touch(&self, agent_id: &str) {
        if let Some(agent) = self.write().agents.get_mut(agent_id) {
            agent.last_seen = Some(crate::ids::now());
        }
    }

    /// Replaces everything known about the agent's box.
    pub fn replace_inventory(&self, agent_id: &str, inventory: Inventory) {
        let mut inner = self.write();
        let agent = inner.agents.entry(agent_id.to_string()).or_default();
        agent.site = Some(inventory.site);
        agent.proxysmart_reachable = inventory.proxysmart_reachable;
        agent.modems = inventory
            .modems
            .into_iter()
            .map(|m| (m.imei.clone(), m))
            .collect();
    }

    /// Applies a change report.
    pub fn apply_changes(&self, agent_id: &str, changes: ModemsChanged) {
        let mut inner = self.write();
        let agent = inner.agents.entry(agent_id.to_string()).or_default();
        agent.proxysmart_reachable = changes.proxysmart_reachable;
        for imei in changes.removed {
            agent.modems.remove(&imei);
        }
        for modem in changes.changed {
            agent.modems.insert(modem.imei.clone(), modem);
        }
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

    /// The agent currently reporting `imei`, preferring a connected one.
    pub fn locate(&self, imei: &str) -> Option<(String, bool)> {
        let inner = self.read();
        let mut found: Vec<(String, bool)> = inner
            .agents
            .iter()
            .filter(|(_, a)| a.modems.contains_key(imei))
            .map(|(id, a)| (id.clone(), a.connected))
            .collect();
        found.sort_by_key(|(_, connected)| !connected);
        found.into_iter().next()
    }

    /// Picks the least-loaded available modem matching `filter` and takes one slot on it.
    pub fn reserve(&self, filter: &ModemFilter) -> Option<Reservation> {
        let mut inner = self.write();
        let filter = ModemFilter {
            available: Some(true),
            ..filter.clone()
        };
        let chosen = inner
            .agents
            .iter()
            .flat_map(|(id, agent)| agent.modems.values().map(move |m| (id, agent, m)))
            .map(|(id, agent, modem)| (self.view(&inner, id, agent, modem), agent))
            .filter(|(view, _)| matches(&filter, view))
            .min_by(|(a, _), (b, _)| {
                (a.active_allocations, &a.imei).cmp(&(b.active_allocations, &b.imei))
            })
            .and_then(|(view, agent)| {
                let host = agent.site.as_ref()?.public_host.clone();
                Some(Reservation {
                    agent_id: view.agent_id,
                    imei: view.imei,
                    carrier: view.carrier,
                    country: view.country,
                    public_host: host,
                })
            })?;
        *inner.load.entry(chosen.imei.clone()).or_default() += 1;
        Some(chosen)
    }

    /// Counts one more live allocation on `imei` (used when rebuilding from storage).
    pub fn add_load(&self, imei: &str) {
        *self.write().load.entry(imei.to_string()).or_default() += 1;
    }

    /// One live allocation on `imei` ended (released or failed).
    pub fn release_load(&self, imei: &str) {
        let mut inner = self.write();
        if let Some(n) = inner.load.get_mut(imei) {
            *n = n.saturating_sub(1);
        }
    }

    fn view(&self, inner: &Inner, agent_id: &str, agent: &LiveAgent, modem: &Modem) -> ModemView {
        let load = inner.load.get(&modem.imei).copied().unwrap_or(0);
        let site = agent.site.as_ref();
        let available = agent.connected
            && agent.proxysmart_reachable
            && modem.online
            && modem.ext_ip.is_some()
            && site.is_some()
            && load < self.capacity;
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
            capacity: self.capacity,
            available,
        }
    }
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
        }
    }

    fn fleet_with(modems: Vec<Modem>) -> Fleet {
        let fleet = Fleet::new(1);
        fleet.connected("a1", "s1", "0.1.0");
        let site = Site {
            public_host: "203.0.113.7".into(),
            country: "DE".into(),
            city: None,
        };
        fleet.replace_inventory(
            "a1",
            Inventory {
                site,
                proxysmart_reachable: true,
                modems,
                ports: vec![],
            },
        );
        fleet
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
        fleet.release_load("1");
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
            Some(("a1".into(), true)),
            "a stale session id is ignored"
        );
        fleet.disconnected("a1", "s1");
        assert_eq!(fleet.reserve(&ModemFilter::default()), None);
        assert_eq!(
            fleet.modems(&ModemFilter::default()).len(),
            1,
            "last known modems stay listed"
        );
        assert_eq!(fleet.locate("1"), Some(("a1".into(), false)));
    }
}
