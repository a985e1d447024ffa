//! The audit log: an append-only sled tree of security-relevant actions, read by
//! `GET /v1/audit`. Keys are big-endian microsecond timestamps made strictly increasing
//! (a clock that stands still or steps back still yields a later key), so the tree's order
//! is the order of events and `since` is a range scan. A key is also the entry's cursor
//! (`audit_page`). Nothing ever updates an entry; only the retention sweeper deletes them,
//! oldest first (`audit_prune`). Details never hold a secret: callers pass ids, labels,
//! codes and counts only.
//!
//! Appends are not flushed one by one: they ride on the flush of the state change they
//! describe, or on sled's periodic flush (every 500 ms).

use super::{encode, SledStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::Ordering;
use time::OffsetDateTime;
use tracing::error;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An API key was created (CLI, API or library).
    KeyCreated,
    /// An admin revoked an API key.
    KeyRevoked,
    /// An admin revoked an unused enrollment token.
    EnrollmentTokenRevoked,
    /// An admin issued an enrollment token.
    EnrollmentTokenIssued,
    /// An enrollment token was consumed.
    EnrollmentTokenUsed,
    /// An agent enrolled.
    AgentEnrolled,
    /// An agent completed its handshake.
    AgentConnected,
    /// An agent's session ended.
    AgentDisconnected,
    /// An admin revoked an agent.
    AgentRevoked,
    /// An allocation became active (its port exists).
    AllocationCreated,
    /// A release started and waits for the agent.
    AllocationReleasing,
    /// The agent confirmed a port gone.
    AllocationReleased,
    /// Provisioning failed, or a lost port could not be re-created (`reconcile` repair).
    AllocationFailed,
    /// A port the agent reported missing was re-created with the same credentials.
    AllocationRepaired,
    /// An allocation moved to another modem with the same credentials.
    AllocationReplaced,
    /// An allocation's modem is down and no other modem could take it (once per outage),
    /// or its port failed `[probe] failures_to_degrade` probes in a row (`reason`).
    AllocationDegraded,
    /// A degraded allocation's port passed a probe again.
    AllocationRecovered,
    /// The retention period passed and a buyer password was deleted.
    CredentialsPurged,
    /// The operator rotated the credential key (`credentials rotate-key`).
    CredentialKeyRotated,
    /// A modem's IP was rotated.
    IpRotated,
    /// An agent refused a command under its seller's local policy.
    PolicyDenied,
    /// A client used up its budget of failed authentications (once per burst).
    AuthFailureBurst,
    /// A key tried a call its role may not make because of what it would reveal or move
    /// (an admin replacing a buyer's allocation).
    PrivilegeRefused,
    /// An admin approved an agent held for approval (`[enroll] require_approval`).
    AgentApproved,
    /// An agent reported an IMEI another agent reports too (neither copy is sold).
    ModemDuplicateIdentity,
    /// An admin named the owner of a duplicate IMEI.
    ModemIdentityResolved,
    /// A modem's SIM was swapped, it was re-plugged, or it moved to another box (`details`:
    /// `kind`, `from`, `to`; ICCIDs by their last four digits).
    ModemIdentityChanged,
    /// An admin registered a webhook endpoint.
    WebhookCreated,
    /// An admin deleted a webhook endpoint.
    WebhookDeleted,
    /// An admin exported what the plane holds about a seller's box.
    SellerExported,
    /// An admin erased a seller's box (details: counts only, never the erased data).
    SellerErased,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it: `admin:NAME`, `marketplace:NAME`, `agent:ID`, `client:IP`, `cli`,
    /// `system`.
    pub actor: String,
    /// What happened.
    pub action: AuditAction,
    /// What it happened to: `agent:ID`, `allocation:ID`, `modem:IMEI`, `token:FINGERPRINT`,
    /// `key:NAME`, `client:IP`.
    pub target: String,
    /// Ids, labels, codes and counts that explain the event; never a secret.
    pub details: Value,
}

impl SledStore {
    /// Appends an event; a storage failure is logged, not returned, because the action it
    /// describes has already happened and must not be reported as failed.
    pub fn audit(
        &self,
        actor: impl Into<String>,
        action: AuditAction,
        target: impl Into<String>,
        details: Value,
    ) {
        let event = AuditEvent {
            at: crate::ids::now(),
            actor: actor.into(),
            action,
            target: target.into(),
            details,
        };
        if let Err(e) = self.append_audit(&event) {
            error!(action = ?event.action, "cannot append to the audit log: {e}");
        }
    }

    /// Appends `event` under the next key.
    pub fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let key = self.next_audit_key(event.at);
        self.audit.insert(key.to_be_bytes(), encode(event)?)?;
        Ok(())
    }

    /// Up to `limit` events at or after `since`, oldest first.
    pub fn audit_since(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let page = self.audit_page(None, since, limit)?;
        Ok(page.entries.into_iter().map(|e| e.event).collect())
    }

    /// max(now in µs, last key + 1): strictly increasing across threads.
    fn next_audit_key(&self, at: OffsetDateTime) -> u64 {
        let wanted = micros(at);
        let previous = self
            .audit_last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(wanted.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|last| last);
        wanted.max(previous.saturating_add(1))
    }
}

/// The last key in the tree (0 when empty), where a reopened store continues.
pub(super) fn last_key(tree: &sled::Tree) -> Result<u64, StoreError> {
    Ok(match tree.last()? {
        Some((key, _)) => key.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
        None => 0,
    })
}

pub(super) fn micros(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_keep_their_order_across_reopen_and_since_filters() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let t0 = crate::ids::now();
        for i in 0..50 {
            store.audit(
                "system",
                AuditAction::IpRotated,
                format!("modem:{i}"),
                json!({}),
            );
        }
        let all = store.audit_since(t0, 1000).unwrap();
        let targets: Vec<String> = all.iter().map(|e| e.target.clone()).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("modem:{i}")).collect();
        assert_eq!(targets, expected, "same instant, still in order");
        assert_eq!(store.audit_since(t0, 3).unwrap().len(), 3);
        drop(store);

        let store = SledStore::open(dir.path()).unwrap();
        store.audit(
            "cli",
            AuditAction::KeyCreated,
            "key:ops",
            json!({"role": "admin"}),
        );
        let all = store.audit_since(t0, 1000).unwrap();
        assert_eq!(all.len(), 51);
        assert_eq!(
            all[50].action,
            AuditAction::KeyCreated,
            "appended after reopen"
        );
        let later = all[50].at + time::Duration::seconds(1);
        assert!(store.audit_since(later, 10).unwrap().is_empty());
    }
}
