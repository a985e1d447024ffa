//! The index behind `Fleet::reserve`: every *available* (agent, modem) pair, grouped in
//! pools by (site country, carrier) — both ASCII-lowercased, the way filters compare them —
//! and ordered inside a pool the way `reserve` picks: least load first, then IMEI. A pick
//! is then one look at the first entry of each matching pool (there are as many pools as
//! country × carrier pairs, a handful) instead of a scan of every modem of every agent,
//! which at 80,000 modems cost ~17 M instructions under the fleet's write lock.
//!
//! The index is derived state: `Fleet` takes an agent's entries out before it changes that
//! agent (or a modem's load) and puts them back afterwards, computing both from the same
//! `Candidate`s, so an entry is always removed with exactly the key it was added with
//! ([`AgentWrite`] does it for every method that changes an agent).
//!
//! It is compact because it has an entry per modem of the fleet: agents are numbered
//! (`AgentNo`) instead of repeating their ids, and an IMEI's holders (almost always one
//! agent) are kept without a heap allocation.
//!
//! An IMEI reported by two agents is contested (`Inner::contested`) and neither copy is
//! available, so a change to one holder's modems also re-indexes the other holders' copy
//! of the same IMEI — removed as it was computed before the change, added as after.

use super::{available, Inner, ModemFilter};
use std::collections::{BTreeSet, HashMap};
use std::ops::{Deref, DerefMut};
use std::sync::RwLockWriteGuard;

/// The pool of a modem: (site country, carrier), lowercased; `None` when unknown.
type PoolKey = (Option<String>, Option<String>);

/// An agent's number in the index.
type AgentNo = u32;

/// One available slot: (load, IMEI, agent), ordered as `reserve` prefers them.
type Slot = (u32, Box<str>, AgentNo);

/// The agents reporting one IMEI: one, except when a box was re-enrolled or cloned.
#[derive(Debug, Clone)]
enum Holders {
    One(AgentNo),
    Many(Vec<AgentNo>),
}

impl Holders {
    fn as_slice(&self) -> &[AgentNo] {
        match self {
            Holders::One(n) => std::slice::from_ref(n),
            Holders::Many(v) => v,
        }
    }
}

/// Where a modem would go in the index and whether it belongs there.
#[derive(Debug)]
struct Candidate {
    pool: PoolKey,
    slot: Slot,
    available: bool,
}

/// The reserve index (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Available slots by pool.
    pools: HashMap<PoolKey, BTreeSet<Slot>>,
    /// IMEI → the agents listing it.
    holders: HashMap<Box<str>, Holders>,
    /// Agent id → number, and back.
    numbers: HashMap<String, AgentNo>,
    names: Vec<String>,
}

impl Index {
    fn number(&mut self, agent_id: &str) -> AgentNo {
        if let Some(n) = self.numbers.get(agent_id) {
            return *n;
        }
        let n = AgentNo::try_from(self.names.len()).unwrap_or(AgentNo::MAX);
        self.names.push(agent_id.to_string());
        self.numbers.insert(agent_id.to_string(), n);
        n
    }

    fn name(&self, n: AgentNo) -> Option<&str> {
        self.names.get(n as usize).map(String::as_str)
    }

    fn add(&mut self, c: Candidate) {
        if c.available {
            self.pools.entry(c.pool).or_default().insert(c.slot);
        }
    }

    fn remove(&mut self, c: &Candidate) {
        if !c.available {
            return;
        }
        if let Some(pool) = self.pools.get_mut(&c.pool) {
            pool.remove(&c.slot);
            if pool.is_empty() {
                self.pools.remove(&c.pool);
            }
        }
    }

    fn hold(&mut self, imei: &str, n: AgentNo) {
        match self.holders.get_mut(imei) {
            None => {
                self.holders.insert(imei.into(), Holders::One(n));
            }
            Some(Holders::One(m)) if *m != n => {
                let first = *m;
                self.holders
                    .insert(imei.into(), Holders::Many(vec![first, n]));
            }
            Some(Holders::Many(v)) if !v.contains(&n) => v.push(n),
            Some(_) => {}
        }
    }

    fn unhold(&mut self, imei: &str, n: AgentNo) {
        let keep = match self.holders.get_mut(imei) {
            Some(Holders::One(m)) => *m != n,
            Some(Holders::Many(v)) => {
                v.retain(|m| *m != n);
                if let [only] = v.as_slice() {
                    let only = *only;
                    self.holders.insert(imei.into(), Holders::One(only));
                }
                true
            }
            None => true,
        };
        if !keep {
            self.holders.remove(imei);
        }
    }

    /// The agents listing `imei`.
    fn holders_of(&self, imei: &str) -> &[AgentNo] {
        self.holders.get(imei).map_or(&[], Holders::as_slice)
    }
}

impl Inner {
    /// Where `imei` of agent `n` goes in the index, with loads and holders as they are now
    /// (`None`: the agent does not list it).
    fn candidate(&self, capacity: u32, n: AgentNo, imei: &str) -> Option<Candidate> {
        let agent_id = self.index.name(n)?;
        let agent = self.agents.get(agent_id)?;
        let modem = agent.modems.get(imei)?;
        let load = self.load_of(agent_id, imei);
        let country = agent.site.as_ref().map(|s| s.country.as_str());
        Some(Candidate {
            pool: (fold(country), fold(modem.carrier.as_deref())),
            slot: (load, modem.imei.as_str().into(), n),
            available: available(agent, modem, load, capacity) && !self.contested(agent_id, imei),
        })
    }

    /// The agents other than `n` listing `imei`.
    fn other_holders(&self, imei: &str, n: AgentNo) -> Vec<AgentNo> {
        let holders = self.index.holders_of(imei).iter().copied();
        holders.filter(|m| *m != n).collect()
    }

    /// Takes the entries of `holders`' copies of `imei` out (before a change of holders).
    fn unindex_copies(&mut self, imei: &str, holders: &[AgentNo], capacity: u32) {
        for m in holders {
            if let Some(c) = self.candidate(capacity, *m, imei) {
                self.index.remove(&c);
            }
        }
    }

    /// Puts the entries of `holders`' copies of `imei` back (after a change of holders).
    fn index_copies(&mut self, imei: &str, holders: &[AgentNo], capacity: u32) {
        for m in holders {
            if let Some(c) = self.candidate(capacity, *m, imei) {
                self.index.add(c);
            }
        }
    }

    /// Takes every modem of `agent_id` out of the index.
    fn unindex_agent(&mut self, agent_id: &str, capacity: u32) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        let imeis: Vec<String> = agent.modems.keys().cloned().collect();
        let n = self.index.number(agent_id);
        for imei in imeis {
            if let Some(c) = self.candidate(capacity, n, &imei) {
                self.index.remove(&c);
            }
            let others = self.other_holders(&imei, n);
            self.unindex_copies(&imei, &others, capacity);
            self.index.unhold(&imei, n);
            self.index_copies(&imei, &others, capacity);
        }
    }

    /// Puts every modem of `agent_id` (as it is now) back into the index.
    fn index_agent(&mut self, agent_id: &str, capacity: u32) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        let imeis: Vec<String> = agent.modems.keys().cloned().collect();
        let n = self.index.number(agent_id);
        for imei in imeis {
            let others = self.other_holders(&imei, n);
            self.unindex_copies(&imei, &others, capacity);
            self.index.hold(&imei, n);
            self.index_copies(&imei, &others, capacity);
            if let Some(c) = self.candidate(capacity, n, &imei) {
                self.index.add(c);
            }
        }
    }

    /// The index entries of every agent listing `imei`.
    fn imei_candidates(&self, imei: &str, capacity: u32) -> Vec<Candidate> {
        self.index
            .holders_of(imei)
            .iter()
            .filter_map(|n| self.candidate(capacity, *n, imei))
            .collect()
    }

    /// Changes the load of `imei` of `agent_id` with `change`, keeping the index in step.
    pub(super) fn change_load(
        &mut self,
        agent_id: &str,
        imei: &str,
        capacity: u32,
        change: impl FnOnce(&mut u32),
    ) {
        let n = self.index.number(agent_id);
        let old = self.candidate(capacity, n, imei);
        if let Some(old) = &old {
            self.index.remove(old);
        }
        let loads = self.load.entry(agent_id.to_string()).or_default();
        change(loads.entry(imei.to_string()).or_default());
        if loads.get(imei) == Some(&0) {
            loads.remove(imei);
            if loads.is_empty() {
                self.load.remove(agent_id);
            }
        }
        if let Some(new) = self.candidate(capacity, n, imei) {
            self.index.add(new);
        }
    }

    /// Names `agent_id` the owner of `imei`, re-indexing every holder's copy.
    pub(super) fn set_owner(&mut self, imei: &str, agent_id: &str, capacity: u32) {
        let holders = self.index.holders_of(imei).to_vec();
        self.unindex_copies(imei, &holders, capacity);
        self.owners.insert(imei.to_string(), agent_id.to_string());
        self.index_copies(imei, &holders, capacity);
    }

    /// The agents listing `imei`.
    pub(super) fn holders(&self, imei: &str) -> Vec<String> {
        self.index
            .holders_of(imei)
            .iter()
            .filter_map(|n| self.index.name(*n).map(str::to_string))
            .collect()
    }

    /// The available (agent id, IMEI) that `reserve` should take for `filter`: the least
    /// loaded, then the lowest IMEI, among those matching it.
    pub(super) fn pick(&self, filter: &ModemFilter, capacity: u32) -> Option<(String, String)> {
        if filter.online == Some(false) {
            return None; // an available modem is online
        }
        let country = fold(filter.country.as_deref());
        let carrier = fold(filter.carrier.as_deref());
        let wanted = |(c, k): &PoolKey| {
            country.as_ref().is_none_or(|w| c.as_ref() == Some(w))
                && carrier.as_ref().is_none_or(|w| k.as_ref() == Some(w))
        };
        // Boxes known to drop what the order needs are passed over; the first capable
        // entry of a pool is almost always its first.
        let capable = |n: AgentNo| {
            self.index
                .name(n)
                .and_then(|id| self.agents.get(id))
                .is_some_and(|agent| agent.can_honour(filter))
        };
        let (_, imei, n) = match &filter.imei {
            Some(imei) => {
                self.imei_candidates(imei, capacity)
                    .into_iter()
                    .filter(|c| c.available && wanted(&c.pool) && capable(c.slot.2))
                    .min_by(|a, b| a.slot.cmp(&b.slot))?
                    .slot
            }
            None => self
                .index
                .pools
                .iter()
                .filter(|(key, _)| wanted(key))
                .filter_map(|(_, pool)| pool.iter().find(|slot| capable(slot.2)))
                .min()?
                .clone(),
        };
        Some((self.index.name(n)?.to_string(), imei.into()))
    }
}

/// Write access to the fleet for a change to one agent: its modems leave the index when the
/// guard is made and come back, as the agent then is, when it drops — so no method that
/// changes an agent can forget the index.
#[derive(Debug)]
pub(super) struct AgentWrite<'a> {
    inner: RwLockWriteGuard<'a, Inner>,
    agent_id: &'a str,
    capacity: u32,
}

impl<'a> AgentWrite<'a> {
    pub(super) fn new(
        mut inner: RwLockWriteGuard<'a, Inner>,
        agent_id: &'a str,
        capacity: u32,
    ) -> Self {
        inner.unindex_agent(agent_id, capacity);
        AgentWrite {
            inner,
            agent_id,
            capacity,
        }
    }
}

impl Deref for AgentWrite<'_> {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl DerefMut for AgentWrite<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

impl Drop for AgentWrite<'_> {
    fn drop(&mut self) {
        self.inner.index_agent(self.agent_id, self.capacity);
    }
}

/// Lowercases an optional name for pool keys.
fn fold(name: Option<&str>) -> Option<String> {
    name.map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests;
