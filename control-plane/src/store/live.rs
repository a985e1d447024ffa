//! An in-memory index of the allocations that still hold a port (`pending`, `active`,
//! `releasing`, and any other state whose `holds_port()` is true): by agent, for the
//! `reconcile` of every handshake and the releases finished on reconnect, and by expiry,
//! for the expiry sweeper. Without it each of those decoded every allocation ever stored
//! (released ones included): a restart storm of N agents after A allocations cost N × A
//! record decodes, and the sweeper, woken by every new allocation, rescanned the table.
//!
//! Derived state, never stored: built by one scan when the store opens and kept in step by
//! `insert_allocation` / `put_allocation` — every write of the allocation tree goes through
//! those two, which write sled and the index under the index's lock, so two writers of one
//! record cannot leave the index disagreeing with the tree. Ended allocations are not
//! indexed, so its size is bounded by the live ones.

use super::{decode, AllocationRecord, AllocationState, StoreError};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
struct Entry {
    agent_id: String,
    /// `Some` while the allocation is in service (`is_live`): the sweeper's deadline.
    expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Default)]
pub(super) struct Live {
    by_id: HashMap<String, Entry>,
    by_agent: HashMap<String, BTreeSet<String>>,
    by_expiry: BTreeSet<(OffsetDateTime, String)>,
    /// How many allocations are in each state (of `AllocationState::ALL`), all of them,
    /// ended ones included: `/metrics` reads this instead of the table.
    counts: [u64; AllocationState::ALL.len()],
}

fn slot(state: AllocationState) -> usize {
    AllocationState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or(0)
}

impl Live {
    /// Counts a record written in `current` state that was in `previous` (`None`: new).
    pub(super) fn counted(&mut self, previous: Option<AllocationState>, current: AllocationState) {
        if let Some(previous) = previous {
            let n = &mut self.counts[slot(previous)];
            *n = n.saturating_sub(1);
        }
        self.counts[slot(current)] += 1;
    }

    /// Uncounts a deleted record that was in `state`.
    pub(super) fn forgotten(&mut self, state: AllocationState) {
        let n = &mut self.counts[slot(state)];
        *n = n.saturating_sub(1);
    }

    /// How many allocations are in each state.
    pub(super) fn counts(&self) -> Vec<(AllocationState, u64)> {
        AllocationState::ALL
            .iter()
            .map(|s| (*s, self.counts[slot(*s)]))
            .collect()
    }

    /// Makes the index agree with `record` as just written.
    pub(super) fn note(&mut self, record: &AllocationRecord) {
        self.forget(&record.allocation_id);
        if !record.state.holds_port() {
            return;
        }
        let id = record.allocation_id.clone();
        let expires_at = in_service(record.state).then_some(record.expires_at);
        if let Some(at) = expires_at {
            self.by_expiry.insert((at, id.clone()));
        }
        self.by_agent
            .entry(record.agent_id.clone())
            .or_default()
            .insert(id.clone());
        let entry = Entry {
            agent_id: record.agent_id.clone(),
            expires_at,
        };
        self.by_id.insert(id, entry);
    }

    fn forget(&mut self, allocation_id: &str) {
        let Some(old) = self.by_id.remove(allocation_id) else {
            return;
        };
        if let Some(at) = old.expires_at {
            self.by_expiry.remove(&(at, allocation_id.to_string()));
        }
        if let Some(ids) = self.by_agent.get_mut(&old.agent_id) {
            ids.remove(allocation_id);
            if ids.is_empty() {
                self.by_agent.remove(&old.agent_id);
            }
        }
    }

    /// Ids of the live allocations of `agent_id`.
    pub(super) fn of_agent(&self, agent_id: &str) -> Vec<String> {
        self.by_agent
            .get(agent_id)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Ids of every live allocation.
    pub(super) fn all(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }

    /// In-service allocations whose expiry is at or before `now`, and the first expiry
    /// after it.
    pub(super) fn expiring(&self, now: OffsetDateTime) -> (Vec<String>, Option<OffsetDateTime>) {
        let mut due = Vec::new();
        for (at, id) in &self.by_expiry {
            if *at > now {
                return (due, Some(*at));
            }
            due.push(id.clone());
        }
        (due, None)
    }
}

/// Whether the sweeper expires allocations in `state` (the port is confirmed and in
/// service).
fn in_service(state: AllocationState) -> bool {
    state.is_live()
}

/// The index behind its lock.
#[derive(Debug, Default)]
pub(super) struct LiveIndex(Mutex<Live>);

impl LiveIndex {
    /// Builds the index from every record of `tree` (once, at open).
    pub(super) fn build(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut live = Live::default();
        for value in tree.iter().values() {
            let record: AllocationRecord = decode(&value?)?;
            live.note(&record);
            live.counted(None, record.state);
        }
        Ok(LiveIndex(Mutex::new(live)))
    }

    /// The index, locked: hold it across the sled write the index must agree with.
    pub(super) fn lock(&self) -> MutexGuard<'_, Live> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    /// A record built from JSON, so fields others add with serde defaults need no edit here.
    fn record(
        id: &str,
        agent: &str,
        state: AllocationState,
        expires_in_s: i64,
    ) -> AllocationRecord {
        let now = crate::ids::now();
        let rfc3339 = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        serde_json::from_value(serde_json::json!({
            "allocation_id": id,
            "order_id": format!("o-{id}"),
            "state": state,
            "imei": "350000000000018",
            "agent_id": agent,
            "carrier": null, "country": null, "host": null, "http_port": null,
            "socks_port": null, "port_id": null, "login": "l", "password_sealed": null,
            "created_at": rfc3339(now),
            "expires_at": rfc3339(now + time::Duration::seconds(expires_in_s)),
            "released_at": null, "release_reason": null, "failure": null,
            "request": {"order_id": format!("o-{id}"), "duration_s": 60},
        }))
        .unwrap()
    }

    fn ids(records: Vec<AllocationRecord>) -> Vec<String> {
        let mut ids: Vec<String> = records.into_iter().map(|r| r.allocation_id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_index_follows_state_changes_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .insert_allocation(&record("al_1", "ag_a", AllocationState::Pending, 60))
                .unwrap();
            store
                .put_allocation(&record("al_1", "ag_a", AllocationState::Active, -1))
                .unwrap();
            store
                .put_allocation(&record("al_2", "ag_a", AllocationState::Active, 100))
                .unwrap();
            store
                .put_allocation(&record("al_3", "ag_b", AllocationState::Releasing, -5))
                .unwrap();
            store
                .put_allocation(&record("al_4", "ag_a", AllocationState::Released, -5))
                .unwrap();
            let of_a = store.agent_allocations("ag_a", |_| true).unwrap();
            assert_eq!(ids(of_a), ["al_1", "al_2"], "released ones are not live");
            let (due, next) = store.expiring(crate::ids::now()).unwrap();
            assert_eq!(ids(due), ["al_1"], "only in-service allocations expire");
            assert!(next.is_some_and(|n| n > crate::ids::now()));
            store
                .put_allocation(&record("al_1", "ag_a", AllocationState::Releasing, -1))
                .unwrap();
            assert!(store.expiring(crate::ids::now()).unwrap().0.is_empty());
            let counts = store.allocation_counts();
            let count = |state| counts.iter().find(|(s, _)| *s == state).unwrap().1;
            assert_eq!(count(AllocationState::Releasing), 2);
            assert_eq!(count(AllocationState::Active), 1);
            assert_eq!(count(AllocationState::Pending), 0);
        }
        let store = SledStore::open(dir.path()).unwrap();
        let of_a = store
            .agent_allocations("ag_a", |r| r.state == AllocationState::Active)
            .unwrap();
        assert_eq!(ids(of_a), ["al_2"]);
        assert_eq!(
            ids(store.live_allocations().unwrap()),
            ["al_1", "al_2", "al_3"]
        );
        assert!(store
            .agent_allocations("ag_nobody", |_| true)
            .unwrap()
            .is_empty());
        let counts = store.allocation_counts();
        let count = |state| counts.iter().find(|(s, _)| *s == state).unwrap().1;
        assert_eq!(
            (
                count(AllocationState::Releasing),
                count(AllocationState::Released)
            ),
            (2, 1),
            "rebuilt at open"
        );
    }
}
