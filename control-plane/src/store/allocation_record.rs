//! What an allocation is, as stored: its state machine ([`AllocationState`]), the record
//! with the request that made it, its replacements, and what inserting one or reading a
//! page returns. The table and its indexes are `allocations`.

use super::DEFAULT_TENANT;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Lifecycle of an allocation: `pending → active → releasing → released`, `pending → failed`,
/// `active → failed` (a lost port could not be re-created), and `active → replaced` (moved
/// to another modem; `replaced` is live like `active` and follows the same paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllocationState {
    /// Provision sent, not yet confirmed.
    Pending,
    /// The agent confirmed the port.
    Active,
    /// Release requested, not yet confirmed by the agent.
    Releasing,
    /// The port is gone.
    Released,
    /// Provisioning failed, or a lost port could not be re-created; no port exists (a late
    /// one is released).
    Failed,
    /// Moved to another modem (same id and credentials, new host and ports); live, exactly
    /// like `active`.
    Replaced,
}

impl AllocationState {
    /// Every state, for metrics.
    pub const ALL: [AllocationState; 6] = [
        Self::Pending,
        Self::Active,
        Self::Releasing,
        Self::Released,
        Self::Failed,
        Self::Replaced,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Releasing => "releasing",
            Self::Released => "released",
            Self::Failed => "failed",
            Self::Replaced => "replaced",
        }
    }

    /// Whether a port may exist on the modem (it counts against the modem's capacity).
    pub fn holds_port(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Active | Self::Releasing | Self::Replaced
        )
    }

    /// Whether the buyer's port is confirmed and in service (`active` or `replaced`): it can
    /// be renewed, released, replaced, and expires.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Active | Self::Replaced)
    }
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The marketplace released it.
    Cancelled,
    /// Its lifetime ended.
    Expired,
    /// Its agent was revoked.
    AgentRevoked,
    /// It was replaced by another allocation.
    Replaced,
    /// Provisioning failed.
    Failed,
}

/// Why an allocation was moved to another modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplacementReason {
    /// Its modem was offline (or no longer listed by ProxySmart) for longer than the grace
    /// period.
    ModemOffline,
    /// Its agent was disconnected for longer than the lost window.
    AgentOffline,
    /// `POST /v1/allocations/{id}/replace`.
    Requested,
    /// Its port failed `[probe] failures_to_degrade` probes in a row.
    ProbeFailed,
}

/// One move of an allocation, kept in its `replacements` history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// When the new port was confirmed.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Why it moved.
    pub reason: ReplacementReason,
    /// The modem it left.
    pub from_imei: String,
    /// The agent of the modem it left.
    pub from_agent_id: String,
    /// The modem it moved to.
    pub to_imei: String,
    /// The agent of the modem it moved to.
    pub to_agent_id: String,
}

/// The request that created an allocation, normalised; compared for idempotency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order_id": "shop-order-1234", "duration_s": 2_592_000, "country": "DE", "carrier": "Vodafone"}))]
pub struct AllocationRequest {
    /// The marketplace's idempotency key: 1–128 printable characters, opaque (your order
    /// number; never personal data). The same body again answers 200 with the same
    /// allocation; a different body under a used order id 409 `order_conflict`.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub order_id: String,
    /// Lifetime in seconds.
    #[schema(minimum = 60, maximum = 31_536_000)]
    pub duration_s: u64,
    /// ISO 3166-1 alpha-2 filter.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z]{2}$", example = "DE")]
    pub country: Option<String>,
    /// Carrier filter (case-insensitive).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub carrier: Option<String>,
    /// IMEI filter.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{14,16}$")]
    pub imei: Option<String>,
    /// Automatic IP rotation of the allocation's modem, every this many seconds (carried
    /// out by the agent; see `allocator::request::check_rotate_every`).
    /// At least the plane's `min_rotate_every_s` (60 unless its operator changed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 86_400)]
    pub rotate_every_s: Option<u64>,
    /// Speed limit of the port, kbit/s, each direction (see `allocator::request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub bandwidth_kbit: Option<u64>,
    /// Traffic quota of the port, MB (10^6 bytes), downloads and uploads together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub traffic_quota_mb: Option<u64>,
}

/// One allocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// Its id.
    pub allocation_id: String,
    /// The marketplace's order id.
    pub order_id: String,
    /// Where it is in its lifecycle.
    pub state: AllocationState,
    /// The modem.
    pub imei: String,
    /// The agent of the modem.
    pub agent_id: String,
    /// The modem's carrier when it was chosen.
    pub carrier: Option<String>,
    /// The site's country.
    pub country: Option<String>,
    /// Where buyers connect (set when active).
    pub host: Option<String>,
    /// HTTP proxy port (set when active).
    pub http_port: Option<u16>,
    /// SOCKS5 proxy port (set when active).
    pub socks_port: Option<u16>,
    /// ProxySmart's port id (set when active).
    pub port_id: Option<String>,
    /// The buyer's proxy login.
    pub login: String,
    /// The buyer's proxy password, sealed with AES-256-GCM (see `credentials`); `None`
    /// once the retention period after release has passed (see `retention`).
    pub password_sealed: Option<String>,
    /// When it was requested.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the port stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When the agent confirmed the port gone.
    #[serde(with = "time::serde::rfc3339::option")]
    pub released_at: Option<OffsetDateTime>,
    /// Why it ended (set when release starts or provisioning fails).
    pub release_reason: Option<ReleaseReason>,
    /// Why provisioning failed, for operators.
    pub failure: Option<String>,
    /// The normalised request, for idempotency checks.
    pub request: AllocationRequest,
    /// Every move to another modem, oldest first (empty when none).
    #[serde(default)]
    pub replacements: Vec<Replacement>,
    /// The marketplace tenant it belongs to (only that tenant's keys see it).
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Set when the operational detail was cleared at the end of its retention window
    /// (`[retention] allocation_detail_days`): modem, host, ports, port id, login and
    /// failure text are gone; the financial core stays (see `forget`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detail_purged: bool,
}

fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

/// One page of a tenant's (or every tenant's) allocations, oldest first.
#[derive(Debug)]
pub struct AllocationPage {
    /// The allocations that matched.
    pub records: Vec<AllocationRecord>,
    /// Where the next page starts (opaque hex), while the index goes on.
    pub next_cursor: Option<String>,
}

/// What a conditional change expects of the stored record (`Store::save_change`): still
/// in `state`, still expiring at `expires_at` and moved `moves` times — as the writer read
/// it. Another node's release, expiry sweep, renewal or move made meanwhile is then not
/// overwritten: the writer hears `false` and looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The state read.
    pub state: AllocationState,
    /// The expiry read.
    pub expires_at: OffsetDateTime,
    /// How many moves the record read had (`replacements`): a second move keeps the
    /// state (`replaced`) and the expiry, so only this tells it happened.
    pub moves: usize,
}

impl Expected {
    /// What `record`, as read, says.
    pub fn of(record: &AllocationRecord) -> Self {
        Expected {
            state: record.state,
            expires_at: record.expires_at,
            moves: record.replacements.len(),
        }
    }
}

impl AllocationRecord {
    /// The modem of `agent_id` that carries, or carried, this allocation's port; `None`
    /// when that agent never held it.
    pub fn modem_of(&self, agent_id: &str) -> Option<String> {
        if self.agent_id == agent_id {
            return Some(self.imei.clone());
        }
        self.replacements
            .iter()
            .rev()
            .find(|r| r.from_agent_id == agent_id)
            .map(|r| r.from_imei.clone())
    }

    /// A live allocation `id` on agent `ag`'s modem, created at `at` for a day, with every
    /// detail set (unit tests).
    #[cfg(test)]
    pub(crate) fn example(id: &str, at: OffsetDateTime) -> Self {
        AllocationRecord {
            allocation_id: id.into(),
            order_id: format!("o-{id}"),
            state: AllocationState::Active,
            imei: "350000000000018".into(),
            agent_id: "ag".into(),
            carrier: Some("Vodafone".into()),
            country: Some("DE".into()),
            host: Some("203.0.113.7".into()),
            http_port: Some(8001),
            socks_port: Some(5001),
            port_id: Some("p1".into()),
            login: "fhlogin".into(),
            password_sealed: Some("sealed".into()),
            created_at: at,
            expires_at: at + time::Duration::days(1),
            released_at: None,
            release_reason: None,
            failure: None,
            request: AllocationRequest {
                order_id: format!("o-{id}"),
                duration_s: 86_400,
                country: Some("DE".into()),
                carrier: None,
                imei: Some("350000000000018".into()),
                rotate_every_s: None,
                bandwidth_kbit: Some(1000),
                traffic_quota_mb: None,
            },
            tenant: super::DEFAULT_TENANT.into(),
            replacements: Vec::new(),
            detail_purged: false,
        }
    }

    /// When the allocation ended — released, or failed (a provisioning failure ends where
    /// it began; a failed repair when it failed) — which is when its credential retention
    /// period starts; `None` while live.
    pub fn ended_at(&self) -> Option<OffsetDateTime> {
        match self.state {
            AllocationState::Released | AllocationState::Failed => {
                Some(self.released_at.unwrap_or(self.created_at))
            }
            _ => None,
        }
    }
}

/// Result of inserting a new allocation.
#[derive(Debug)]
pub enum InsertOutcome {
    /// Stored, with its order index entry.
    Inserted,
    /// The order id already has a live (not failed) allocation: this one.
    Existing(Box<AllocationRecord>),
    /// Not stored: the modem holds its capacity of allocations already (another node sold
    /// its last slot; PostgreSQL only).
    ModemFull,
    /// Not stored: the database has no record of this agent's modem yet (its inventory is
    /// being recorded; PostgreSQL only — see `Store::record_modems`).
    ModemUnknown,
}
