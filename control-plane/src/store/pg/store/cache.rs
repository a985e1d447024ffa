//! What a node keeps of the rows that change rarely but are read on every request or
//! event: the API keys requests authenticate with and the webhook endpoints events fan out
//! to. Without it each request and each event would cost those reads again.
//!
//! A copy is good while nothing changed: every write of those rows on this node drops
//! the copies at once, and the write's own statement tells every node
//! (`pg_notify('farmhand_changed')`, sent when it commits, so a write whose caller went
//! away is still told), which drop theirs when the notification arrives
//! (`gateway::cluster` → `Store::changed_elsewhere`).
//! A copy is also dropped [`FRESH`] after it was read, whatever happened: a notification
//! is lost with its connection, and a store nobody listens for (a tool, a test) must not
//! serve stale rows for long. So a key revoked or an endpoint added on one node takes
//! effect on the others within a moment, and within `FRESH` at the latest.
//!
//! Only keys that authenticated are kept (by their hash): a client with wrong keys cannot
//! grow this. The check after a request that its key still exists (`api::auth::recheck`)
//! reads the database, never this: it must see a revocation made anywhere.

use crate::store::{KeyInfo, WebhookEndpoint};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest a copy is used without reading the rows again.
const FRESH: Duration = Duration::from_secs(1);

/// A copy and what it is good for.
struct Copy<T> {
    value: T,
    ticket: Ticket,
}

/// When a read began: the generation then, and the time (a copy's age counts from before
/// its query ran).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    generation: u64,
    at: Instant,
}

/// The copies of one store handle (shared by its clones).
#[derive(Default)]
pub(super) struct Cache {
    /// Bumped by every change; a copy read under another generation is stale.
    generation: AtomicU64,
    keys: Mutex<HashMap<Vec<u8>, Copy<KeyInfo>>>,
    endpoints: Mutex<Option<Copy<Vec<WebhookEndpoint>>>>,
}

impl Cache {
    /// Taken before a read: a copy stored with it is dropped if anything changes
    /// meanwhile, and [`FRESH`] after it was taken.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation(),
            at: Instant::now(),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keys or endpoints changed (here or on another node): every copy is stale.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.keys).clear();
        *lock(&self.endpoints) = None;
    }

    fn good<T>(&self, copy: &Copy<T>) -> bool {
        copy.ticket.generation == self.generation() && copy.ticket.at.elapsed() < FRESH
    }

    /// The key whose hash is `hash`, if a good copy is kept.
    pub(super) fn key(&self, hash: &[u8]) -> Option<KeyInfo> {
        let keys = lock(&self.keys);
        keys.get(hash)
            .filter(|c| self.good(c))
            .map(|c| c.value.clone())
    }

    /// Keeps `key`, read with `ticket`.
    pub(super) fn put_key(&self, hash: Vec<u8>, key: KeyInfo, ticket: Ticket) {
        let mut keys = lock(&self.keys);
        keys.retain(|_, c| self.good(c));
        keys.insert(hash, Copy { value: key, ticket });
    }

    /// Notes on the copy of the key with id `key_id` that its last use, as stored, is
    /// `at` (this node just wrote it, or found it already written within the minute).
    pub(super) fn note_used(&self, key_id: &str, at: time::OffsetDateTime) {
        for copy in lock(&self.keys).values_mut() {
            if copy.value.key_id == key_id {
                copy.value.last_used_at = Some(at);
            }
        }
    }

    /// The endpoints, if a good copy is kept.
    pub(super) fn endpoints(&self) -> Option<Vec<WebhookEndpoint>> {
        lock(&self.endpoints)
            .as_ref()
            .filter(|c| self.good(c))
            .map(|c| c.value.clone())
    }

    /// Keeps `endpoints`, read with `ticket`.
    pub(super) fn put_endpoints(&self, endpoints: Vec<WebhookEndpoint>, ticket: Ticket) {
        *lock(&self.endpoints) = Some(Copy {
            value: endpoints,
            ticket,
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ApiKeyRecord, Role};

    fn key(id: &str) -> KeyInfo {
        KeyInfo {
            key_id: id.into(),
            record: ApiKeyRecord {
                role: Role::Admin,
                name: "ops".into(),
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                tenant: None,
                seller: None,
                expires_at: None,
            },
            last_used_at: None,
        }
    }

    #[test]
    fn a_copy_read_before_a_change_is_never_served_after_it() {
        let cache = Cache::default();
        let before = cache.ticket();
        cache.changed();
        cache.put_key(b"h".to_vec(), key("key_a"), before);
        assert!(cache.key(b"h").is_none());
        cache.put_key(b"h".to_vec(), key("key_a"), cache.ticket());
        assert_eq!(cache.key(b"h").map(|k| k.key_id), Some("key_a".into()));
        cache.changed();
        assert!(cache.key(b"h").is_none());
    }

    #[test]
    fn a_use_is_noted_on_its_key_only() {
        let cache = Cache::default();
        let now = cache.ticket();
        cache.put_key(b"a".to_vec(), key("key_a"), now);
        cache.put_key(b"b".to_vec(), key("key_b"), now);
        let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(1);
        cache.note_used("key_a", at);
        assert_eq!(cache.key(b"a").unwrap().last_used_at, Some(at));
        assert_eq!(cache.key(b"b").unwrap().last_used_at, None);
        cache.put_endpoints(Vec::new(), now);
        assert_eq!(cache.endpoints(), Some(Vec::new()));
        cache.changed();
        assert_eq!(cache.endpoints(), None);
    }
}
