//! The last IP rotation of each modem (`agent_id/IMEI` → record; a bare IMEI for records
//! written before modems were told apart by agent, read as any agent's): what
//! `GET /v1/modems` shows as
//! `last_rotation`, and the clock of the rotation cooldown (`allocator::rotate`). Manual
//! rotations and the automatic ones agents report both land here; a record is only ever
//! replaced by a later one, so a report delivered late cannot move the clock back. Flushed,
//! so the cooldown survives a restart.
//!
//! Reads come from memory, because a full `GET /v1/modems` of a 10,000-agent fleet asks for
//! 80,000 of them: the tree is mirrored in a map loaded at open and kept in step by
//! `record_rotation`, the tree's only writer, under the map's write lock. An unreadable
//! record is logged and skipped at open (no `last_rotation`, no cooldown for that modem
//! until its next rotation) rather than stopping the plane.

use super::{decode, encode, RetentionKind, SledStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use tracing::error;

/// One finished rotation of a modem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    /// When it finished, Unix ms (the plane's clock).
    pub at_ms: u64,
    /// The IP before, if known.
    pub old_ip: Option<String>,
    /// The IP after; `None` when the modem showed no settled IP in time.
    pub new_ip: Option<String>,
    /// Whether the IP is known to have changed.
    pub changed: bool,
    /// True when the agent's scheduler did it (`rotate_every_s`), false for the REST API.
    pub automatic: bool,
}

/// The rotations tree and its in-memory mirror (see the module docs).
#[derive(Debug)]
pub(super) struct Rotations {
    pub(super) tree: sled::Tree,
    /// IMEI → the record stored in `tree`.
    pub(super) last: RwLock<HashMap<String, RotationRecord>>,
}

impl Rotations {
    /// Opens the tree and loads every record into memory (once, at open).
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let tree = db.open_tree("modem_rotations")?;
        let mut last = HashMap::new();
        for item in tree.iter() {
            let (key, value) = item?;
            let imei = String::from_utf8_lossy(&key).into_owned();
            match decode::<RotationRecord>(&value) {
                Ok(record) => {
                    last.insert(imei, record);
                }
                Err(e) => error!(imei = %imei, "ignoring an unreadable rotation record: {e}"),
            }
        }
        Ok(Rotations {
            tree,
            last: RwLock::new(last),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, RotationRecord>> {
        self.last.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The key of `imei` of `agent_id`: two agents reporting one IMEI keep two clocks, so one
/// cannot put the other's modem in cooldown.
fn key(agent_id: &str, imei: &str) -> String {
    format!("{agent_id}/{imei}")
}

fn lookup(
    last: &HashMap<String, RotationRecord>,
    agent_id: &str,
    imei: &str,
) -> Option<RotationRecord> {
    last.get(&key(agent_id, imei))
        .or_else(|| last.get(imei))
        .cloned()
}

impl SledStore {
    /// The last rotation recorded for `imei` of `agent_id` (from memory).
    pub fn last_rotation(&self, agent_id: &str, imei: &str) -> Option<RotationRecord> {
        lookup(&self.rotations.read(), agent_id, imei)
    }

    /// The last rotation of each (agent, IMEI), in their order (from memory, one lock for
    /// the whole list).
    pub fn last_rotations<'a>(
        &self,
        modems: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<Option<RotationRecord>> {
        let last = self.rotations.read();
        modems
            .into_iter()
            .map(|(agent_id, imei)| lookup(&last, agent_id, imei))
            .collect()
    }

    /// Records a rotation of `imei` of `agent_id` unless a later one is already recorded;
    /// flushed. Returns whether it was stored.
    pub fn record_rotation(
        &self,
        agent_id: &str,
        imei: &str,
        record: &RotationRecord,
    ) -> Result<bool, StoreError> {
        let value = encode(record)?;
        let imei = key(agent_id, imei);
        let imei = imei.as_str();
        {
            // Held across the sled write: the map and the tree change together.
            let mut last = self
                .rotations
                .last
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if last
                .get(imei)
                .is_some_and(|stored| stored.at_ms > record.at_ms)
            {
                return Ok(false);
            }
            self.rotations.tree.insert(imei.as_bytes(), value)?;
            last.insert(imei.to_string(), record.clone());
            let at = super::retention_queue::from_ms(record.at_ms);
            self.queue_retention(RetentionKind::Rotation, at, imei.as_bytes())?;
        }
        self.flush()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: u64, new_ip: &str) -> RotationRecord {
        RotationRecord {
            at_ms,
            old_ip: Some("198.51.100.1".into()),
            new_ip: Some(new_ip.into()),
            changed: true,
            automatic: false,
        }
    }

    /// Every record as the tree holds it, read from sled directly.
    fn tree_contents(store: &SledStore) -> HashMap<String, RotationRecord> {
        store
            .rotations
            .tree
            .iter()
            .map(|item| {
                let (key, value) = item.unwrap();
                (
                    String::from_utf8(key.to_vec()).unwrap(),
                    decode(&value).unwrap(),
                )
            })
            .collect()
    }

    /// What the in-memory view answers for every modem of `tree`, plus one never rotated.
    fn assert_view_matches_tree(store: &SledStore) {
        let tree = tree_contents(store);
        let mut keys: Vec<&str> = tree.keys().map(String::as_str).collect();
        keys.push("ag/350000000000999");
        let modems: Vec<(&str, &str)> = keys.iter().map(|k| k.split_once('/').unwrap()).collect();
        let view = store.last_rotations(modems.iter().copied());
        for ((key, seen), (agent, imei)) in keys.iter().zip(view).zip(&modems) {
            assert_eq!(seen.as_ref(), tree.get(*key), "{key}");
            assert_eq!(
                store.last_rotation(agent, imei).as_ref(),
                tree.get(*key),
                "{key}"
            );
        }
    }

    #[test]
    fn two_agents_reporting_one_imei_keep_their_own_clocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .record_rotation(
                "impostor",
                "350000000000018",
                &record(9000, "198.51.100.66"),
            )
            .unwrap();
        assert_eq!(store.last_rotation("owner", "350000000000018"), None);
        assert_eq!(
            store
                .last_rotation("impostor", "350000000000018")
                .map(|r| r.at_ms),
            Some(9000)
        );
        // A record from before agents were told apart (a bare IMEI) stands for any agent.
        store
            .rotations
            .tree
            .insert(
                "350000000000026",
                encode(&record(5, "198.51.100.1")).unwrap(),
            )
            .unwrap();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store
                .last_rotation("any", "350000000000026")
                .map(|r| r.at_ms),
            Some(5)
        );
    }

    #[test]
    fn keeps_the_latest_rotation_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.last_rotation("ag", "350000000000018"), None);
            assert!(store
                .record_rotation("ag", "350000000000018", &record(2000, "198.51.100.2"))
                .unwrap());
            // An older report (delivered late) does not move the clock back.
            assert!(!store
                .record_rotation("ag", "350000000000018", &record(1000, "198.51.100.9"))
                .unwrap());
        }
        let store = SledStore::open(dir.path()).unwrap();
        let last = store.last_rotation("ag", "350000000000018").unwrap();
        assert_eq!(
            (last.at_ms, last.new_ip.as_deref()),
            (2000, Some("198.51.100.2"))
        );
        assert_eq!(store.last_rotation("ag", "350000000000026"), None);
    }

    #[test]
    fn the_in_memory_view_matches_the_tree_after_writes_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_view_matches_tree(&store);
            store
                .record_rotation("ag", "350000000000018", &record(1000, "198.51.100.2"))
                .unwrap();
            store
                .record_rotation("ag", "350000000000026", &record(1500, "198.51.100.3"))
                .unwrap();
            // A later rotation replaces the first one, an equal time too, an older one not.
            store
                .record_rotation("ag", "350000000000018", &record(3000, "198.51.100.4"))
                .unwrap();
            store
                .record_rotation("ag", "350000000000026", &record(1500, "198.51.100.5"))
                .unwrap();
            store
                .record_rotation("ag", "350000000000026", &record(1499, "198.51.100.6"))
                .unwrap();
            assert_eq!(tree_contents(&store).len(), 2);
            assert_view_matches_tree(&store);
            let listed =
                store.last_rotations([("ag", "350000000000026"), ("ag", "350000000000018")]);
            let ips: Vec<_> = listed
                .iter()
                .map(|r| r.as_ref().unwrap().new_ip.as_deref().unwrap())
                .collect();
            assert_eq!(ips, ["198.51.100.5", "198.51.100.4"], "in the order asked");
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(tree_contents(&store).len(), 2);
        assert_view_matches_tree(&store);
        store
            .record_rotation("ag", "350000000000034", &record(5000, "198.51.100.7"))
            .unwrap();
        assert_view_matches_tree(&store);
        assert_eq!(
            store
                .last_rotation("ag", "350000000000034")
                .unwrap()
                .new_ip
                .as_deref(),
            Some("198.51.100.7")
        );
    }

    #[test]
    fn an_unreadable_record_is_left_out_and_overwritten_by_the_next_rotation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .rotations
                .tree
                .insert("ag/350000000000018", &b"not json"[..])
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.last_rotation("ag", "350000000000018"), None);
        assert!(store
            .record_rotation("ag", "350000000000018", &record(10, "198.51.100.2"))
            .unwrap());
        assert_view_matches_tree(&store);
    }
}
