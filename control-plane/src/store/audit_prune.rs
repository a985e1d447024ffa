//! Deleting old audit entries (`[retention] audit_days`, driven by `retention`).
//!
//! Keys are microsecond timestamps that never run behind their event's clock and only
//! grow, so "older than the cutoff" is a key range at the front of the tree: a batch reads
//! keys only (no value is decoded), stops at the first young entry, and never rescans
//! what is left. A key that ran ahead of its clock may keep its entry one batch longer,
//! never shorter.
//!
//! The newest entry is never deleted: a reopened store continues its keys after the last
//! one in the tree (see `audit::last_key`), and keeping it means no key is ever handed out
//! twice, so a client's cursor stays valid even if the whole log aged out and the clock
//! stepped back.

use super::{audit::micros, audit_page::key_of, SledStore, StoreError};
use time::OffsetDateTime;

impl SledStore {
    /// Deletes up to `max` of the oldest entries whose key is before `cutoff` (never the
    /// newest entry); returns how many went. Fewer than `max` means none older is left.
    pub fn prune_audit_before(
        &self,
        cutoff: OffsetDateTime,
        max: usize,
    ) -> Result<usize, StoreError> {
        let newest = match self.audit.last()? {
            Some((key, _)) => key_of(&key),
            None => return Ok(0),
        };
        let end = micros(cutoff).min(newest).to_be_bytes();
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in self.audit.range(..end).keys().take(max) {
            batch.remove(key?);
            count += 1;
        }
        if count > 0 {
            // One batch: a single log write instead of `count` separate removals.
            self.audit.apply_batch(batch)?;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditAction, AuditEvent};
    use serde_json::json;
    use time::Duration;

    fn append_at(store: &SledStore, at: OffsetDateTime, target: String) {
        let event = AuditEvent {
            at,
            actor: "system".into(),
            action: AuditAction::IpRotated,
            target,
            details: json!({}),
        };
        store.append_audit(&event).unwrap();
    }

    #[test]
    fn pruning_takes_old_entries_from_the_front_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = crate::ids::now();
        let old = now - Duration::days(400);
        for i in 0..2500 {
            append_at(&store, old, format!("old:{i}"));
        }
        for i in 0..3 {
            append_at(&store, now, format!("young:{i}"));
        }
        let cutoff = now - Duration::days(365);
        let batches: Vec<usize> = (0..4)
            .map(|_| store.prune_audit_before(cutoff, 1000).unwrap())
            .collect();
        assert_eq!(batches, [1000, 1000, 500, 0]);
        let left = store.audit_page(None, old, 100).unwrap();
        let targets: Vec<&str> = left
            .entries
            .iter()
            .map(|e| e.event.target.as_str())
            .collect();
        assert_eq!(targets, ["young:0", "young:1", "young:2"]);
    }

    #[test]
    fn the_newest_entry_stays_and_keys_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old = crate::ids::now() - Duration::days(30);
        for i in 0..3 {
            append_at(&store, old, format!("old:{i}"));
        }
        let cutoff = crate::ids::now();
        assert_eq!(store.prune_audit_before(cutoff, 1000).unwrap(), 2);
        assert_eq!(store.prune_audit_before(cutoff, 1000).unwrap(), 0);
        let kept = store.audit_page(None, old, 10).unwrap().entries;
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].event.target, "old:2");
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        append_at(&store, old - Duration::days(1), "after reopen".into());
        let tail = store.audit_page(Some(kept[0].cursor), old - Duration::days(2), 10);
        let tail = tail.unwrap().entries;
        assert_eq!(
            tail.len(),
            1,
            "a key after the kept one, although its clock is older"
        );
        assert_eq!(tail[0].event.target, "after reopen");
    }

    #[test]
    fn an_empty_log_prunes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.prune_audit_before(crate::ids::now(), 10).unwrap(), 0);
    }
}
