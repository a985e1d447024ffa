//! The last IP rotation of each modem (IMEI → record): what `GET /v1/modems` shows as
//! `last_rotation`, and the clock of the rotation cooldown (`allocator::rotate`). Manual
//! rotations and the automatic ones agents report both land here; a record is only ever
//! replaced by a later one, so a report delivered late cannot move the clock back. Flushed,
//! so the cooldown survives a restart.

use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};

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

impl Store {
    /// The last rotation recorded for `imei`.
    pub fn last_rotation(&self, imei: &str) -> Result<Option<RotationRecord>, StoreError> {
        match self.rotations.get(imei.as_bytes())? {
            Some(raw) => Ok(Some(decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// Records a rotation of `imei` unless a later one is already recorded; flushed.
    /// Returns whether it was stored.
    pub fn record_rotation(&self, imei: &str, record: &RotationRecord) -> Result<bool, StoreError> {
        let value = encode(record)?;
        loop {
            let current = self.rotations.get(imei.as_bytes())?;
            if let Some(raw) = &current {
                let stored: RotationRecord = decode(raw)?;
                if stored.at_ms > record.at_ms {
                    return Ok(false);
                }
            }
            let swapped =
                self.rotations
                    .compare_and_swap(imei.as_bytes(), current, Some(value.clone()))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(true);
            }
        }
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

    #[test]
    fn keeps_the_latest_rotation_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.last_rotation("350000000000018").unwrap(), None);
            assert!(store
                .record_rotation("350000000000018", &record(2000, "198.51.100.2"))
                .unwrap());
            // An older report (delivered late) does not move the clock back.
            assert!(!store
                .record_rotation("350000000000018", &record(1000, "198.51.100.9"))
                .unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let last = store.last_rotation("350000000000018").unwrap().unwrap();
        assert_eq!(
            (last.at_ms, last.new_ip.as_deref()),
            (2000, Some("198.51.100.2"))
        );
        assert_eq!(store.last_rotation("350000000000026").unwrap(), None);
    }
}
