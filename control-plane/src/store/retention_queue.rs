//! The retention queue (`retention_queue`): for each kind of record a retention window
//! applies to, the records of that kind in the order their window started — key
//! `[kind][start, Unix ms, big-endian][record key]` → nothing. A record is queued by the
//! write that starts its window (an allocation ending, a rotation, a delivery, a token
//! issued; an ended allocation's later windows are queued as the earlier ones end); the
//! sweeper (`retention`) walks each kind from the front up to "now minus the
//! window", acts on each record and removes its entry, so a pass stops at the first young
//! entry and never rescans what it keeps. The audit log needs no entry here: its keys are
//! already times (`audit_prune`).
//!
//! Records written before this queue existed are queued once, at open (`backfill`).

use super::{decode, AllocationRecord, Delivery, SledStore, StoreError, TokenRecord};
use super::{secret_hash, RotationRecord};
use crate::ids::unix_ms;
use time::OffsetDateTime;

/// A kind of record with a retention window, and what its window's end does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionKind {
    /// An ended allocation's sealed password: purged.
    Credentials,
    /// An ended allocation's operational detail (modem, host, ports, login, failure text):
    /// cleared, the financial core kept.
    AllocationDetail,
    /// An ended allocation's financial core, its usage and its indexes: deleted.
    AllocationRecord,
    /// A modem's last rotation (old and new IP): deleted unless a later one replaced it.
    Rotation,
    /// A finished webhook delivery (its log line and payload): deleted.
    WebhookDelivery,
    /// An enrollment token, used or not, counted from its expiry: deleted.
    EnrollmentToken,
}

impl RetentionKind {
    /// Every kind, in the order a pass handles them.
    pub const ALL: [RetentionKind; 6] = [
        Self::Credentials,
        Self::AllocationDetail,
        Self::AllocationRecord,
        Self::Rotation,
        Self::WebhookDelivery,
        Self::EnrollmentToken,
    ];

    fn tag(self) -> u8 {
        match self {
            Self::Credentials => 1,
            Self::AllocationDetail => 2,
            Self::AllocationRecord => 3,
            Self::Rotation => 4,
            Self::WebhookDelivery => 5,
            Self::EnrollmentToken => 6,
        }
    }

    /// The name logs and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credentials => "credentials",
            Self::AllocationDetail => "allocation_detail",
            Self::AllocationRecord => "allocation_record",
            Self::Rotation => "rotation",
            Self::WebhookDelivery => "webhook_delivery",
            Self::EnrollmentToken => "enrollment_token",
        }
    }
}

/// The marker key saying existing records were queued (`backfill`); kind tag 0 is no kind.
const BACKFILLED: &[u8] = &[0, b'v', b'1'];

/// One queued record whose window started at `started`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// When its window started.
    pub started: OffsetDateTime,
    /// The record's key in its own table.
    pub record: Vec<u8>,
    entry: Vec<u8>,
}

impl Queued {
    /// A queued record as a backend read it.
    pub(crate) fn new(kind: RetentionKind, started: OffsetDateTime, record: Vec<u8>) -> Self {
        Queued {
            entry: entry(kind, started, &record),
            started,
            record,
        }
    }

    /// The kind it is queued under.
    pub(crate) fn kind(&self) -> Option<RetentionKind> {
        let tag = *self.entry.first()?;
        RetentionKind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

impl RetentionKind {
    /// The window that follows this one for the same record, if any (an allocation's
    /// credentials, then its detail, then the record).
    pub(crate) fn next(self) -> Option<RetentionKind> {
        match self {
            RetentionKind::Credentials => Some(RetentionKind::AllocationDetail),
            RetentionKind::AllocationDetail => Some(RetentionKind::AllocationRecord),
            _ => None,
        }
    }

    /// The first window still ahead of an ended allocation (`None` while it is live).
    pub(crate) fn of_ended(record: &AllocationRecord) -> Option<(RetentionKind, OffsetDateTime)> {
        let ended = record.ended_at()?;
        let kind = if record.password_sealed.is_some() {
            RetentionKind::Credentials
        } else if !record.detail_purged {
            RetentionKind::AllocationDetail
        } else {
            RetentionKind::AllocationRecord
        };
        Some((kind, ended))
    }
}

pub(crate) fn from_ms(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn entry(kind: RetentionKind, started: OffsetDateTime, record: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + record.len());
    key.push(kind.tag());
    key.extend_from_slice(&unix_ms(started).to_be_bytes());
    key.extend_from_slice(record);
    key
}

fn parse(raw: &[u8]) -> Option<Queued> {
    let ms = u64::from_be_bytes(raw.get(1..9)?.try_into().ok()?);
    Some(Queued {
        started: from_ms(ms),
        record: raw.get(9..)?.to_vec(),
        entry: raw.to_vec(),
    })
}

impl SledStore {
    /// Queues `record` (its key in its own table) under `kind`, its window starting at
    /// `started`. Idempotent.
    pub(super) fn queue_retention(
        &self,
        kind: RetentionKind,
        started: OffsetDateTime,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.retention_queue
            .insert(entry(kind, started, record), &[])?;
        Ok(())
    }

    /// Removes `record`'s entry under `kind` (the record was deleted by other means).
    pub(super) fn unqueue_retention(
        &self,
        kind: RetentionKind,
        started: OffsetDateTime,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.retention_queue.remove(entry(kind, started, record))?;
        Ok(())
    }

    /// Up to `max` records of `kind` whose window started at or before `cutoff`, oldest
    /// first (keys only are read; the walk stops at the first younger entry).
    pub fn retention_due(
        &self,
        kind: RetentionKind,
        cutoff: OffsetDateTime,
        max: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let start = [kind.tag()];
        // Every entry started at or before `cutoff` sorts before this one.
        let end = entry(kind, from_ms(unix_ms(cutoff).saturating_add(1)), &[]);
        let mut due = Vec::new();
        for key in self
            .retention_queue
            .range(start.as_slice()..end.as_slice())
            .keys()
            .take(max)
        {
            if let Some(queued) = parse(&key?) {
                due.push(queued);
            }
        }
        Ok(due)
    }

    /// When the oldest queued record of `kind` started its window, if any is queued.
    pub fn oldest_queued(&self, kind: RetentionKind) -> Result<Option<OffsetDateTime>, StoreError> {
        let first = self.retention_queue.scan_prefix([kind.tag()]).keys().next();
        Ok(first
            .transpose()?
            .and_then(|k| parse(&k))
            .map(|q| q.started))
    }

    /// Removes a handled record's queue entry.
    pub fn retention_done(&self, queued: &Queued) -> Result<(), StoreError> {
        self.retention_queue.remove(&queued.entry)?;
        Ok(())
    }

    /// How many records of `kind` are queued (tests and diagnostics; a scan).
    pub fn retention_queued(&self, kind: RetentionKind) -> usize {
        self.retention_queue.scan_prefix([kind.tag()]).count()
    }

    /// Queues, once per database, the records written before the queue existed.
    pub(super) fn backfill_retention(&self) -> Result<(), StoreError> {
        if self.retention_queue.contains_key(BACKFILLED)? {
            return Ok(());
        }
        for entry in self.allocations.iter() {
            let (_, raw) = entry?;
            if let Ok(record) = decode::<AllocationRecord>(&raw) {
                self.queue_ended(&record)?;
            }
        }
        for entry in self.rotations.tree.iter() {
            let (key, raw) = entry?;
            if let Ok(rotation) = decode::<RotationRecord>(&raw) {
                self.queue_retention(RetentionKind::Rotation, from_ms(rotation.at_ms), &key)?;
            }
        }
        for entry in self.webhooks.deliveries.iter() {
            let (key, raw) = entry?;
            if let Ok(delivery) = decode::<Delivery>(&raw) {
                self.queue_retention(RetentionKind::WebhookDelivery, delivery.created_at, &key)?;
            }
        }
        for entry in self.tokens.iter() {
            let (hash, raw) = entry?;
            if let Ok(token) = decode::<TokenRecord>(&raw) {
                self.queue_retention(RetentionKind::EnrollmentToken, token.expires_at, &hash)?;
            }
        }
        self.retention_queue.insert(BACKFILLED, &[])?;
        self.flush()
    }

    /// Queues an ended allocation for the first of its three windows still ahead (nothing
    /// while it is live). One entry per release, on the release's path: the sweeper queues
    /// the next window when it ends one ([`SledStore::retention_next`]); the windows are
    /// ordered (credentials, then detail, then the record), so none is reached late.
    pub(super) fn queue_ended(&self, record: &AllocationRecord) -> Result<(), StoreError> {
        let Some((kind, ended)) = RetentionKind::of_ended(record) else {
            return Ok(());
        };
        self.queue_retention(kind, ended, record.allocation_id.as_bytes())
    }

    /// After `kind`'s window ended for `queued`: queues the record's next window, from the
    /// same start (an allocation's credentials, then its detail, then the record).
    pub fn retention_next(&self, kind: RetentionKind, queued: &Queued) -> Result<(), StoreError> {
        let Some(next) = kind.next() else {
            return Ok(());
        };
        self.queue_retention(next, queued.started, &queued.record)
    }

    /// Queues a new enrollment token (its window starts at its expiry).
    pub(super) fn queue_token(&self, token: &str, record: &TokenRecord) -> Result<(), StoreError> {
        self.queue_retention(
            RetentionKind::EnrollmentToken,
            record.expires_at,
            &secret_hash(token),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn due_walks_one_kind_oldest_first_up_to_the_cutoff_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let t = from_ms(unix_ms(crate::ids::now()));
        let kind = RetentionKind::Rotation;
        store.queue_retention(kind, t, b"b").unwrap();
        store
            .queue_retention(kind, t - Duration::days(1), b"a")
            .unwrap();
        store
            .queue_retention(kind, t + Duration::milliseconds(1), b"c")
            .unwrap();
        store
            .queue_retention(RetentionKind::Credentials, t - Duration::days(9), b"x")
            .unwrap();
        let due = store.retention_due(kind, t, 10).unwrap();
        let records: Vec<&[u8]> = due.iter().map(|q| q.record.as_slice()).collect();
        assert_eq!(records, [b"a".as_slice(), b"b"]);
        assert_eq!(due[0].started, t - Duration::days(1));
        assert_eq!(store.retention_due(kind, t, 1).unwrap().len(), 1);
        store.retention_done(&due[0]).unwrap();
        assert_eq!(store.oldest_queued(kind).unwrap(), Some(t));
        assert_eq!(store.retention_queued(kind), 2);
        assert_eq!(
            store.oldest_queued(RetentionKind::Credentials).unwrap(),
            Some(t - Duration::days(9))
        );
    }
}
