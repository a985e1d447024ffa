//! Per-key async locks (keyed by order id): everything that changes one allocation —
//! creating it, releasing, renewing, handling its late results — runs under the lock of
//! its order id, so a concurrent duplicate request cannot create a second port and a
//! release cannot overtake the provisioning it would undo. Entries are removed when the
//! last holder lets go, so the map does not grow with the number of orders.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OwnedMutexGuard;

type Slot = Arc<tokio::sync::Mutex<()>>;

/// A set of named async mutexes.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Slot>>,
}

/// Holds the lock of one key until dropped.
#[derive(Debug)]
pub struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for and takes the lock of `key`.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        KeyGuard {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the map still refers to the slot: nobody holds or waits for it.
        if map
            .get(&self.key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_serialises_other_keys_do_not_and_entries_are_cleaned() {
        let locks = KeyedLocks::default();
        let first = locks.lock("a").await;
        let _other = tokio::time::timeout(Duration::from_secs(5), locks.lock("b"))
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), locks.lock("a"))
                .await
                .is_err()
        );
        drop(first);
        drop(_other);
        assert_eq!(locks.len(), 0);
        let _again = tokio::time::timeout(Duration::from_secs(5), locks.lock("a"))
            .await
            .unwrap();
        assert_eq!(locks.len(), 1);
    }
}
