//! Paging the audit log by cursor. An entry's cursor is its key in the `audit` tree, which
//! is strictly increasing and never reused (see `audit`), so "the entries after cursor C"
//! is a range scan that neither repeats nor skips an entry, however many share a
//! timestamp — unlike paging by `since`, which only has the event's time to go on.
//!
//! Clients see a cursor as 16 lowercase hex digits (the key, big-endian) and are told to
//! treat it as opaque, so the encoding can change without breaking them.

use super::{audit::micros, decode, AuditEvent, SledStore, StoreError};
use std::fmt;
use std::ops::Bound;
use std::str::FromStr;
use time::OffsetDateTime;

/// The position of one audit entry: `after` this cursor starts at the next entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditCursor(pub(super) u64);

/// A string that is not a cursor this plane handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cursor is 16 hex digits, as returned in `cursor` or `next_cursor`")]
pub struct InvalidCursor;

impl AuditCursor {
    /// The cursor of the entry at `position` in a backend's log (its sled key, its
    /// PostgreSQL `seq`).
    pub(crate) fn at(position: u64) -> Self {
        AuditCursor(position)
    }

    /// Its position in the log.
    pub(crate) fn position(self) -> u64 {
        self.0
    }
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for AuditCursor {
    type Err = InvalidCursor;

    /// Exactly 16 hex digits: `from_str_radix` alone would also take a sign or a short form.
    fn from_str(text: &str) -> Result<Self, InvalidCursor> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidCursor);
        }
        u64::from_str_radix(text, 16)
            .map(AuditCursor)
            .map_err(|_| InvalidCursor)
    }
}

/// One entry with its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Where this entry is in the log.
    pub cursor: AuditCursor,
    /// The event.
    pub event: AuditEvent,
}

/// One page of the log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// At most the requested number of entries.
    pub entries: Vec<AuditEntry>,
    /// Whether more entries matched after the last one (at the time of the read).
    pub more: bool,
}

impl SledStore {
    /// Up to `limit` entries after `after` (exclusive) and at or after `since`
    /// (inclusive), oldest first; `more` tells whether another matching entry follows.
    pub fn audit_page(
        &self,
        after: Option<AuditCursor>,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let from_since = micros(since);
        // Whichever bound is later implies the other, because keys never run behind time.
        let start = match after {
            Some(AuditCursor(key)) if key >= from_since => Bound::Excluded(key.to_be_bytes()),
            _ => Bound::Included(from_since.to_be_bytes()),
        };
        let mut entries = Vec::new();
        for item in self.audit.range((start, Bound::Unbounded)) {
            let (key, value) = item?;
            let event: AuditEvent = decode(&value)?;
            // A key may run ahead of its event's clock; the filter keeps `since` exact.
            if event.at < since {
                continue;
            }
            if entries.len() == limit {
                return Ok(AuditPage {
                    entries,
                    more: true,
                });
            }
            let cursor = AuditCursor(key_of(&key));
            entries.push(AuditEntry { cursor, event });
        }
        Ok(AuditPage {
            entries,
            more: false,
        })
    }
}

/// The u64 of an 8-byte big-endian key (0 for anything else, which this tree never holds).
pub(super) fn key_of(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditAction;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let c = AuditCursor(0x0006_1a2b_3c4d_5e6f);
        assert_eq!(c.to_string(), "00061a2b3c4d5e6f");
        assert_eq!("00061a2b3c4d5e6f".parse::<AuditCursor>(), Ok(c));
        assert_eq!("00061A2B3C4D5E6F".parse::<AuditCursor>(), Ok(c));
        for bad in [
            "",
            "61a2b3c4d5e6f",
            "+0061a2b3c4d5e6f",
            "00061a2b3c4d5e6g",
            "x",
        ] {
            assert_eq!(bad.parse::<AuditCursor>(), Err(InvalidCursor), "{bad:?}");
        }
        assert_eq!("ffffffffffffffff".parse(), Ok(AuditCursor(u64::MAX)));
    }

    #[test]
    fn pages_follow_each_other_without_repeats_or_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let t0 = crate::ids::now();
        for i in 0..25 {
            store.audit(
                "system",
                AuditAction::IpRotated,
                format!("modem:{i}"),
                json!({}),
            );
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.audit_page(after, t0, 10).unwrap();
            seen.extend(page.entries.iter().map(|e| e.event.target.clone()));
            if !page.more {
                assert_eq!(page.entries.len(), 5, "the last page holds the rest");
                break;
            }
            after = page.entries.last().map(|e| e.cursor);
        }
        let expected: Vec<String> = (0..25).map(|i| format!("modem:{i}")).collect();
        assert_eq!(seen, expected);

        let all = store.audit_page(None, t0, 100).unwrap();
        assert!(!all.more);
        let last = all.entries.last().unwrap().cursor;
        let past = store.audit_page(Some(last), t0, 10).unwrap();
        assert!(past.entries.is_empty() && !past.more);
        let end = store
            .audit_page(Some(AuditCursor(u64::MAX)), t0, 10)
            .unwrap();
        assert!(end.entries.is_empty() && !end.more);
        // `since` still narrows a cursor that lies before it.
        let later = all.entries[24].event.at + time::Duration::seconds(1);
        let first = all.entries[0].cursor;
        assert!(store
            .audit_page(Some(first), later, 10)
            .unwrap()
            .entries
            .is_empty());
    }
}
