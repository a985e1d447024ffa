//! Agents held by other nodes of a cluster, mirrored here: what a node publishes of each
//! agent whose session it holds ([`AgentSnapshot`]), the copy other nodes keep of it (its
//! modems listed and sold like local ones; commands reach it through the database), and
//! the live loads read back from the store. The copy's clocks (offline, away) run here,
//! from what each snapshot says, so an outage looks the same from every node.
//!
//! The loads are a cache: the store's capacity constraint decides a sale. A stale load can
//! only cost a retry (`note_full`), never a slot sold twice.

use super::{Fleet, LiveAgent};
use farmhand_protocol::{BoxCapabilities, HostHealth, Inventory, Modem, Site};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use time::OffsetDateTime;

/// What the node holding an agent's session publishes of it: everything the fleet view
/// shows except its clocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub agent_version: Option<String>,
    #[serde(default)]
    pub protocol: Option<u32>,
    /// When its session on the holder opened.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub connected_since: Option<OffsetDateTime>,
    pub site: Site,
    pub proxysmart_reachable: bool,
    pub modems: Vec<Modem>,
    #[serde(default)]
    pub max_ports_per_modem: Option<u32>,
    #[serde(default)]
    pub capabilities: BoxCapabilities,
    #[serde(default)]
    pub health: Option<HostHealth>,
    #[serde(default)]
    pub awaiting_approval: bool,
    #[serde(default)]
    pub probes_refused: bool,
}

impl AgentSnapshot {
    fn of(agent: &LiveAgent) -> Option<Self> {
        Some(AgentSnapshot {
            agent_version: agent.agent_version.clone(),
            protocol: agent.protocol,
            connected_since: agent.connected_since,
            site: agent.site.clone()?,
            proxysmart_reachable: agent.proxysmart_reachable,
            modems: agent.modems.values().cloned().collect(),
            max_ports_per_modem: agent.max_ports_per_modem,
            capabilities: agent.capabilities.clone(),
            health: agent.health.clone(),
            awaiting_approval: agent.awaiting_approval,
            probes_refused: agent.probes_refused,
        })
    }
}

/// The session id a mirrored agent is connected under here.
fn mirror_session(node: &str) -> String {
    format!("node:{node}")
}

impl Fleet {
    /// What to publish of `agent_id` while its session is here (`None` before its first
    /// inventory, or when it is mirrored from another node).
    pub fn snapshot(&self, agent_id: &str) -> Option<AgentSnapshot> {
        let inner = self.read();
        let agent = inner.agents.get(agent_id)?;
        if !agent.connected || agent.node.is_some() {
            return None;
        }
        AgentSnapshot::of(agent)
    }

    /// Makes the copy of `agent_id`, whose session `node` holds, what `snapshot` says
    /// (connected there). Its modem transitions and duplicates are the holder's to report.
    pub fn mirror(&self, agent_id: &str, node: &str, snapshot: AgentSnapshot) {
        let session = mirror_session(node);
        let fresh = self.read().agents.get(agent_id).is_none_or(|a| {
            a.node.as_deref() != Some(node)
                || a.agent_version != snapshot.agent_version
                || snapshot
                    .connected_since
                    .is_some_and(|s| a.connected_since != Some(s))
        });
        if fresh {
            let version = snapshot.agent_version.clone().unwrap_or_default();
            self.connected(agent_id, &session, &version, snapshot.protocol.unwrap_or(0));
        }
        let (protocol, since) = (snapshot.protocol, snapshot.connected_since);
        let inventory = Inventory {
            site: snapshot.site,
            proxysmart_reachable: snapshot.proxysmart_reachable,
            modems: snapshot.modems,
            ports: Vec::new(),
            max_ports_per_modem: snapshot.max_ports_per_modem,
            capabilities: Some(snapshot.capabilities),
            probes_refused: snapshot.probes_refused,
        };
        self.replace_inventory(agent_id, inventory);
        if let Some(health) = snapshot.health {
            self.set_health(agent_id, health);
        }
        self.set_awaiting_approval(agent_id, snapshot.awaiting_approval);
        let mut inner = self.write();
        if let Some(agent) = inner.agents.get_mut(agent_id) {
            agent.node = Some(node.to_string());
            agent.last_seen = Some(self.clock.now());
            agent.protocol = protocol;
            // The holder's clock: when the session opened there, not when this node heard.
            agent.connected_since = since.or(agent.connected_since);
        }
    }

    /// Agents mirrored here whose session no other node holds now (their node stopped, or
    /// they left): disconnected from this view, except those in `keep`.
    pub fn unmirror_except(&self, keep: &HashSet<String>) {
        let gone: Vec<(String, String)> = self
            .read()
            .agents
            .iter()
            .filter(|(id, a)| a.connected && !keep.contains(*id))
            .filter_map(|(id, a)| Some((id.clone(), a.node.clone()?)))
            .collect();
        for (agent_id, node) in gone {
            self.disconnected(&agent_id, &mirror_session(&node));
        }
    }

    /// Sets every modem's live load to what the store counts (`(agent, IMEI) → live
    /// allocations`; absent = none), the allocations every node made on it.
    pub fn set_loads(&self, loads: &HashMap<(String, String), u32>) {
        let mut inner = self.write();
        let mut modems: Vec<(String, String)> = inner
            .agents
            .iter()
            .flat_map(|(id, a)| a.modems.keys().map(move |imei| (id.clone(), imei.clone())))
            .collect();
        modems.extend(loads.keys().cloned());
        modems.sort();
        modems.dedup();
        for (agent_id, imei) in modems {
            let want = loads
                .get(&(agent_id.clone(), imei.clone()))
                .copied()
                .unwrap_or(0);
            if inner.load_of(&agent_id, &imei) != want {
                inner.change_load(&agent_id, &imei, self.capacity, |n| *n = want);
            }
        }
    }

    /// The store refused a sale on `imei` of `agent_id` as full (another node sold its
    /// last slot): count it full here until the next load reading.
    pub fn note_full(&self, agent_id: &str, imei: &str) {
        let mut inner = self.write();
        let full = inner
            .agents
            .get(agent_id)
            .map_or(self.capacity, |a| a.capacity(self.capacity));
        inner.change_load(agent_id, imei, self.capacity, |n| *n = (*n).max(full));
    }
}
