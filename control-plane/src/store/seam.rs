//! The store seam: the one asynchronous storage API the allocator, gateway, webhooks,
//! audit and sweepers call, whatever backend holds the data: [`SledStore`] (embedded, one
//! node: the default) or [`PgStore`] (PostgreSQL, `docs/operations.md`, "PostgreSQL").
//!
//! Every method is `async` even where sled answers from memory, because a database over
//! the network cannot; each one delegates with the same name and meaning to the backend,
//! whose method documents it (`tests/postgres_store.rs` runs both on the same scenarios).

use super::{
    AgentHour, AgentRecord, AllocationPage, AllocationRecord, AllocationState, ApiKeyRecord,
    AuditAction, AuditCursor, AuditEvent, AuditPage, Delivery, EnrollError, EraseError, Erased,
    InsertOutcome, KeyInfo, Lease, LeasedDelivery, ModemDay, PendingCommand, ProbeTrack, Queued,
    RetentionKind, RotationRecord, SellerRecords, SledStore, StoreError, TokenRecord,
    UsageRecorded, UsageTotals, WebhookEndpoint,
};
use crate::store::pg::PgStore;
use farmhand_protocol::{DesiredPort, UsageReport};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use time::OffsetDateTime;

/// Handle to the plane's durable state; cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    /// The embedded sled database in `<data_dir>/db`.
    Sled(SledStore),
    /// A PostgreSQL database (`[store] backend = "postgres"`).
    Postgres(PgStore),
}

/// The longest a sweep sleeps on a shared store ([`Store::sweep_sleep`]).
pub const CLUSTER_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The shortest time between two passes of one sweep on a shared store
/// ([`Store::pace_sweep`]).
const SWEEP_GAP: std::time::Duration = std::time::Duration::from_millis(250);

impl Store {
    /// Opens (or creates) the embedded database in `<data_dir>/db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        SledStore::open(data_dir).map(Store::Sled)
    }

    /// The sled backend, when it is the one in use (offline tools and tests that read its
    /// files).
    pub fn as_sled(&self) -> Option<&SledStore> {
        match self {
            Store::Sled(s) => Some(s),
            Store::Postgres(_) => None,
        }
    }

    /// The last rotation of each (agent, IMEI), in their order.
    pub async fn last_rotations<'a>(
        &self,
        modems: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Vec<Option<RotationRecord>>, StoreError> {
        match self {
            Store::Sled(s) => Ok(s.last_rotations(modems)),
            Store::Postgres(p) => p.last_rotations(modems).await,
        }
    }

    /// The last rotation recorded for `imei` of `agent_id`.
    pub async fn last_rotation(
        &self,
        agent_id: &str,
        imei: &str,
    ) -> Result<Option<RotationRecord>, StoreError> {
        match self {
            Store::Sled(s) => Ok(s.last_rotation(agent_id, imei)),
            Store::Postgres(p) => p.last_rotation(agent_id, imei).await,
        }
    }

    /// The backend's name, as `/healthz` shows it.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sled(_) => "sled",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The database's schema version (PostgreSQL; sled has none).
    pub async fn schema_version(&self) -> Result<Option<i32>, StoreError> {
        match self {
            Store::Sled(_) => Ok(None),
            Store::Postgres(p) => p.schema_version().await.map(Some),
        }
    }

    /// Claims `agent_id`'s session for `node_id` for `lease`, over any other node's;
    /// returns its fencing epoch (PostgreSQL; sled's one node needs none: 0).
    pub async fn claim_session(
        &self,
        agent_id: &str,
        node_id: &str,
        lease: std::time::Duration,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sled(_) => Ok(0),
            Store::Postgres(p) => p.claim_session(agent_id, node_id, lease).await,
        }
    }

    /// Extends the leases of `node_id`'s sessions; the (agent, epoch) it still holds, or
    /// `None` where sessions are not shared (sled).
    pub async fn renew_sessions(
        &self,
        node_id: &str,
        lease: std::time::Duration,
    ) -> Result<Option<Vec<(String, u64)>>, StoreError> {
        match self {
            Store::Sled(_) => Ok(None),
            Store::Postgres(p) => p.renew_sessions(node_id, lease).await.map(Some),
        }
    }

    /// Ends `agent_id`'s session if it is still `node_id`'s with `epoch`.
    pub async fn end_session(
        &self,
        agent_id: &str,
        node_id: &str,
        epoch: u64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(p) => p.end_session(agent_id, node_id, epoch).await,
        }
    }

    /// The node holding `agent_id`'s session under a live lease (PostgreSQL; sled's one
    /// node: `None`, it knows its sessions itself).
    pub async fn session_holder(&self, agent_id: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sled(_) => Ok(None),
            Store::Postgres(p) => p.session_holder(agent_id).await,
        }
    }

    /// Publishes what `node_id` knows of the agents it holds (`(agent, view)`; PostgreSQL,
    /// for the other nodes' fleet view; nothing on sled).
    pub async fn publish_views(
        &self,
        node_id: &str,
        views: &[(String, serde_json::Value)],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(p) => p.publish_views(node_id, views).await,
        }
    }

    /// The agents held by nodes other than `node_id`, with what each published:
    /// `(agent, node, view)` (none on sled).
    pub async fn views_elsewhere(
        &self,
        node_id: &str,
    ) -> Result<Vec<(String, String, serde_json::Value)>, StoreError> {
        match self {
            Store::Sled(_) => Ok(Vec::new()),
            Store::Postgres(p) => p.views_elsewhere(node_id).await,
        }
    }

    /// Live allocations per `(agent, IMEI)` as the store counts them (PostgreSQL: what
    /// every node sold; sled's one node counts in its fleet view and gets nothing here).
    pub async fn modem_loads(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), u32>, StoreError> {
        match self {
            Store::Sled(_) => Ok(Default::default()),
            Store::Postgres(p) => p.modem_loads().await,
        }
    }

    /// Wakes the node holding `agent_id`'s session: a command was queued for it.
    pub async fn notify_commands(&self, agent_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(p) => {
                p.notify(crate::store::pg::channel::COMMANDS, agent_id)
                    .await
            }
        }
    }

    /// Tells every node that `agent_id` was revoked.
    pub async fn notify_revoked(&self, agent_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(p) => p.notify(crate::store::pg::channel::REVOKED, agent_id).await,
        }
    }

    /// Hands the result of a command `origin_node` waits for over to it (PostgreSQL).
    pub async fn put_result(
        &self,
        origin_node: &str,
        agent_id: &str,
        command_id: &str,
        outcome: &farmhand_protocol::Outcome,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(p) => {
                p.put_result(origin_node, agent_id, command_id, outcome)
                    .await
            }
        }
    }

    /// Takes the result of `command_id` handed over to `origin_node`, if it is there.
    pub async fn take_result(
        &self,
        origin_node: &str,
        command_id: &str,
    ) -> Result<Option<crate::store::pg::ForeignResult>, StoreError> {
        match self {
            Store::Sled(_) => Ok(None),
            Store::Postgres(p) => p.take_result(origin_node, command_id).await,
        }
    }

    /// Takes every result handed over to `origin_node`.
    pub async fn take_results_for(
        &self,
        origin_node: &str,
    ) -> Result<Vec<crate::store::pg::ForeignResult>, StoreError> {
        match self {
            Store::Sled(_) => Ok(Vec::new()),
            Store::Postgres(p) => p.take_results_for(origin_node).await,
        }
    }

    /// Takes the results whose origin node has been silent for `silent` (it died).
    pub async fn take_orphan_results(
        &self,
        silent: std::time::Duration,
    ) -> Result<Vec<crate::store::pg::ForeignResult>, StoreError> {
        match self {
            Store::Sled(_) => Ok(Vec::new()),
            Store::Postgres(p) => p.take_orphan_results(silent).await,
        }
    }

    /// Removes `node_id` and its sessions (stopping cleanly).
    pub async fn leave(&self, node_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(p) => p.leave(node_id).await,
        }
    }

    /// Whether several nodes share this store (PostgreSQL), so a queued command may belong
    /// to a request waiting on another node. On sled a command's origin is always this
    /// process (or one before a restart, whose waiter is gone).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Whether this node runs the sweeps over shared state (expiry, expiry warnings,
    /// replacement, retention) now: always on sled's one node; on PostgreSQL while it
    /// holds the sweeping lock (`pg::lock`).
    pub fn sweeps_here(&self) -> bool {
        match self {
            Store::Sled(_) => true,
            Store::Postgres(p) => p.sweeping().held(),
        }
    }

    /// Resolves once this node runs the sweeps ([`Store::sweeps_here`]).
    pub async fn until_sweeping(&self) {
        match self {
            Store::Sled(_) => {}
            Store::Postgres(p) => p.sweeping().until_held().await,
        }
    }

    /// The allocations still `pending` that were created before `cutoff` (a node that
    /// was provisioning them stopped).
    pub async fn pending_before(
        &self,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        match self {
            Store::Sled(s) => Ok(s
                .live_allocations()?
                .into_iter()
                .filter(|r| r.state == AllocationState::Pending && r.created_at < cutoff)
                .collect()),
            Store::Postgres(p) => p.pending_before(cutoff).await,
        }
    }

    /// Writes `record` with the webhook deliveries of the event reporting the change, in
    /// one durable step (sled: one transaction, flushed; PostgreSQL: one transaction).
    /// Given `from`, only if the stored record is still as it expects (state, expiry, moves):
    /// a transition two nodes may race for is made once (false: it was not made here,
    /// nothing was written; read the record again).
    pub async fn save_change(
        &self,
        record: &AllocationRecord,
        from: Option<crate::store::Expected>,
        deliveries: &[Delivery],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sled(s) => s.save_change(record, from, deliveries).await,
            Store::Postgres(p) => p.save_change(record, from, deliveries).await,
        }
    }

    /// How long a sweep may sleep before it looks at the store again: `longest` on sled
    /// (every change is made on this node, which wakes the sweep), at most
    /// [`CLUSTER_POLL`] on PostgreSQL (other nodes make changes this one is not woken by,
    /// and the sweeping lock may come to this node).
    pub fn sweep_sleep(&self, longest: std::time::Duration) -> std::time::Duration {
        match self {
            Store::Sled(_) => longest,
            Store::Postgres(_) => longest.min(CLUSTER_POLL),
        }
    }

    /// API keys or webhook endpoints were changed (a write on any node, this one included,
    /// notifies every node), or this node may have missed word of it: what the postgres
    /// backend keeps of them is read again. (Nothing to do on sled, which reads its own
    /// tree each time.)
    pub fn changed_elsewhere(&self) {
        if let Store::Postgres(p) = self {
            p.changed_elsewhere();
        }
    }

    /// Waits until [`SWEEP_GAP`] after `last_pass` on PostgreSQL; returns at once on sled.
    /// There a pass is a few queries, and a sweep woken by every sale (to re-read its next
    /// deadline) would run one per sale — the polls every [`CLUSTER_POLL`] see what it
    /// would, a quarter of a second later at most.
    pub async fn pace_sweep(&self, last_pass: tokio::time::Instant) {
        if let Store::Postgres(_) = self {
            tokio::time::sleep_until(last_pass + SWEEP_GAP).await;
        }
    }

    /// Competes for the sweeping lock until `shutdown` (PostgreSQL; returns at once on
    /// sled, whose one node always sweeps).
    pub async fn run_sweep_lock(&self, shutdown: tokio_util::sync::CancellationToken) {
        if let Store::Postgres(p) = self {
            p.run_sweep_lock(shutdown).await;
        }
    }

    /// Whether this backend keeps the fleet's modems (PostgreSQL: its capacity trigger
    /// counts allocations against them; sled's one node has the fleet in memory).
    pub fn keeps_modems(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Records what `agent_id` reports now: `(IMEI, capacity, view)` per modem (see
    /// [`Store::keeps_modems`]; nothing to do on sled).
    pub async fn record_modems(
        &self,
        agent_id: &str,
        modems: &[(String, u32, Value)],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(p) => p.record_modems(agent_id, modems).await,
        }
    }

    /// The names of the tables this store keeps: what `docs/privacy.md` maps.
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sled(s) => Ok(s.table_names()),
            Store::Postgres(p) => p.table_names().await,
        }
    }

    /// How many records of `kind` are queued for retention.
    pub async fn retention_queued(&self, kind: RetentionKind) -> Result<usize, StoreError> {
        match self {
            Store::Sled(s) => Ok(s.retention_queued(kind)),
            Store::Postgres(p) => p.retention_queued(kind).await,
        }
    }

    /// Deliveries waiting for an attempt (or in one), all endpoints together.
    pub async fn pending_webhook_deliveries(&self) -> Result<usize, StoreError> {
        match self {
            Store::Sled(s) => Ok(s.pending_webhook_deliveries()),
            Store::Postgres(p) => p.pending_webhook_deliveries().await,
        }
    }

    /// How many allocations are in each state (every state, ended ones included).
    pub async fn allocation_counts(&self) -> Result<Vec<(AllocationState, u64)>, StoreError> {
        match self {
            Store::Sled(s) => Ok(s.allocation_counts()),
            Store::Postgres(p) => p.allocation_counts().await,
        }
    }
}

/// Writes one `async fn` per backend method: same name, arguments and result.
macro_rules! delegate {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Store {
            $(
                #[doc = concat!("See [`SledStore::", stringify!($name), "`].")]
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Store::Sled(s) => s.$name($($arg),*),
                        Store::Postgres(p) => p.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    // Agents and modem owners.
    fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError>;
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    fn set_modem_owner(&self, imei: &str, agent_id: &str) -> Result<(), StoreError>;
    fn modem_owners(&self) -> Result<Vec<(String, String)>, StoreError>;
    fn approve_agent(&self, agent_id: &str) -> Result<Option<bool>, StoreError>;
    fn revoke_agent(&self, agent_id: &str) -> Result<bool, StoreError>;
    fn seller_records(&self, agent_id: &str) -> Result<Option<SellerRecords>, StoreError>;
    fn erase_seller(&self, agent_id: &str, tombstone: &str) -> Result<Erased, EraseError>;

    // Allocations.
    fn insert_allocation(&self, record: &AllocationRecord) -> Result<InsertOutcome, StoreError>;
    fn purge_credentials(&self, allocation_id: &str) -> Result<bool, StoreError>;
    fn allocation(&self, allocation_id: &str) -> Result<Option<AllocationRecord>, StoreError>;
    fn allocations_page(
        &self,
        tenant: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
        examine: usize,
        keep: impl FnMut(&AllocationRecord) -> bool
    ) -> Result<AllocationPage, StoreError>;
    fn allocation_by_order(
        &self,
        tenant: &str,
        order_id: &str
    ) -> Result<Option<AllocationRecord>, StoreError>;
    fn agent_allocations(
        &self,
        agent_id: &str,
        keep: impl FnMut(&AllocationRecord) -> bool
    ) -> Result<Vec<AllocationRecord>, StoreError>;
    fn desired_ports(&self, agent_id: &str) -> Result<Vec<DesiredPort>, StoreError>;
    fn live_allocations(&self) -> Result<Vec<AllocationRecord>, StoreError>;
    fn expiring(
        &self,
        now: OffsetDateTime
    ) -> Result<(Vec<AllocationRecord>, Option<OffsetDateTime>), StoreError>;
    fn allocations_where(
        &self,
        keep: impl FnMut(&AllocationRecord) -> bool
    ) -> Result<Vec<AllocationRecord>, StoreError>;

    // Audit log.
    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    fn audit_since(&self, since: OffsetDateTime, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    fn audit_page(
        &self,
        after: Option<AuditCursor>,
        since: OffsetDateTime,
        limit: usize
    ) -> Result<AuditPage, StoreError>;
    fn prune_audit_before(&self, cutoff: OffsetDateTime, max: usize) -> Result<usize, StoreError>;

    // The command outbox.
    fn put_pending_command(&self, command: &PendingCommand) -> Result<(), StoreError>;
    fn remove_pending_command(&self, agent_id: &str, command_id: &str) -> Result<bool, StoreError>;
    fn pending_commands(&self, agent_id: &str) -> Result<Vec<PendingCommand>, StoreError>;
    fn purge_agent_commands(&self, agent_id: &str) -> Result<usize, StoreError>;
    fn purge_expired_commands(&self, now_ms: u64) -> Result<usize, StoreError>;

    // Retention.
    fn forget(&self, kind: RetentionKind, queued: &Queued, now: OffsetDateTime) -> Result<bool, StoreError>;
    fn retention_due(
        &self,
        kind: RetentionKind,
        cutoff: OffsetDateTime,
        max: usize
    ) -> Result<Vec<Queued>, StoreError>;
    fn oldest_queued(&self, kind: RetentionKind) -> Result<Option<OffsetDateTime>, StoreError>;
    fn retention_done(&self, queued: &Queued) -> Result<(), StoreError>;
    fn retention_next(&self, kind: RetentionKind, queued: &Queued) -> Result<(), StoreError>;

    // API keys and enrollment tokens.
    fn insert_api_key(&self, key: &str, record: &ApiKeyRecord) -> Result<String, StoreError>;
    fn find_api_key(&self, key: &str, now: OffsetDateTime) -> Result<Option<KeyInfo>, StoreError>;
    fn api_keys(&self) -> Result<Vec<KeyInfo>, StoreError>;
    fn api_key_exists(&self, key_id: &str) -> Result<bool, StoreError>;
    fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    fn touch_api_key(&self, id: &str, now: OffsetDateTime) -> Result<(), StoreError>;
    fn enrollment_tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError>;
    fn revoke_enrollment_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn insert_enrollment_token(&self, token: &str, record: &TokenRecord) -> Result<(), StoreError>;
    fn enroll(
        &self,
        token: &str,
        agent: AgentRecord,
        now: OffsetDateTime
    ) -> Result<AgentRecord, EnrollError>;

    // Rotations and usage.
    fn record_rotation(
        &self,
        agent_id: &str,
        imei: &str,
        record: &RotationRecord
    ) -> Result<bool, StoreError>;
    fn record_usage_report(
        &self,
        agent_id: &str,
        report: &UsageReport,
        now_ms: u64
    ) -> Result<UsageRecorded, StoreError>;
    fn record_usage(
        &self,
        allocation_id: &str,
        agent_id: &str,
        report: UsageTotals
    ) -> Result<(), StoreError>;
    fn usage(&self, allocation_id: &str) -> Result<Option<UsageTotals>, StoreError>;
    fn usages(&self, allocation_ids: &[String]) -> Result<HashMap<String, UsageTotals>, StoreError>;
    fn modem_days(&self, agents: &[String], from_day: i64, to_day: i64) -> Result<Vec<ModemDay>, StoreError>;
    fn prune_modem_days(&self, before_day: i64) -> Result<usize, StoreError>;

    // Webhooks: endpoints, the delivery outbox, expiry warnings sent.
    fn webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;
    fn webhook_endpoint(&self, webhook_id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;
    fn put_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;
    fn remove_webhook_endpoint(&self, webhook_id: &str) -> Result<bool, StoreError>;
    fn next_delivery_seq(&self) -> Result<u64, StoreError>;
    fn enqueue_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError>;
    fn next_webhook_due(&self) -> Result<Option<u64>, StoreError>;
    fn lease_due_delivery(
        &self,
        now_ms: u64,
        lease_ms: u64,
        scan: usize,
        accept: impl Fn(&str) -> bool
    ) -> Result<Lease, StoreError>;
    fn release_webhook_leases(&self) -> Result<usize, StoreError>;
    fn settle_delivery(&self, leased: &LeasedDelivery, delivery: &Delivery) -> Result<(), StoreError>;
    fn webhook_deliveries(&self, webhook_id: &str, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    fn prune_webhook_deliveries(&self, webhook_id: &str, keep: usize) -> Result<usize, StoreError>;
    fn expiring_sent(&self, allocation_id: &str) -> Result<Option<u64>, StoreError>;
    fn mark_expiring_sent(&self, allocation_id: &str, expires_at_ms: u64) -> Result<(), StoreError>;
    fn forget_expiring(&self, allocation_id: &str) -> Result<(), StoreError>;

    // Probe records and quality hours.
    fn save_probe_track(&self, allocation_id: &str, track: &ProbeTrack) -> Result<bool, StoreError>;
    fn probe_track(&self, allocation_id: &str) -> Result<Option<ProbeTrack>, StoreError>;
    fn probe_tracks(&self, allocation_ids: &[String]) -> Result<HashMap<String, ProbeTrack>, StoreError>;
    fn add_quality(&self, hours: &[AgentHour]) -> Result<usize, StoreError>;
    fn quality_hours(&self, agents: Option<&[String]>, from_hour: i64) -> Result<Vec<AgentHour>, StoreError>;
    fn prune_quality(&self, before_hour: i64) -> Result<usize, StoreError>;

    // Whole-store reads (privacy tests).
    fn tables_containing(&self, needle: &[u8]) -> Result<Vec<String>, StoreError>;
}

impl Store {
    /// Makes every write so far durable (sled: the group commit; see
    /// [`SledStore::durable`]).
    pub async fn durable(&self) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.durable().await,
            // A committed statement is durable already.
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Appends to the audit log; a failure is logged, not returned (see
    /// [`SledStore::audit`]).
    pub async fn audit(
        &self,
        actor: impl Into<String>,
        action: AuditAction,
        target: impl Into<String>,
        details: Value,
    ) {
        match self {
            Store::Sled(s) => s.audit(actor, action, target, details),
            Store::Postgres(p) => p.audit(actor, action, target, details).await,
        }
    }

    /// Writes an allocation and makes it durable.
    pub async fn save_allocation(&self, record: &AllocationRecord) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.save_allocation(record).await,
            Store::Postgres(p) => p.save_allocation(record).await,
        }
    }
}
