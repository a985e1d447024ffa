//! Domain events the marketplace can subscribe to with webhooks (`docs/api.md`): what
//! happened, to which object, when. Producers (allocator, gateway sessions) call
//! [`Events::emit`]; it stores one delivery per subscribed endpoint in the durable outbox
//! (`webhooks`) and never waits on the network. A storage error is logged, never returned:
//! the change the event describes has already happened.
//!
//! Modem events fire on transitions only (`fleet::ModemTransition` says which changes are
//! news).

use crate::store::AllocationRecord;
use farmhand_protocol::{Modem, Site};
use serde::Serialize;
use serde_json::Value;

/// Every event type, with its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An allocation's port was confirmed (`pending → active`).
    AllocationActive,
    /// An allocation ended and its port is gone.
    AllocationReleased,
    /// Provisioning failed, or a lost port could not be re-created.
    AllocationFailed,
    /// An allocation was moved to another modem (same id and credentials).
    AllocationReplaced,
    /// An allocation's modem is dead and nothing could replace it, or its port fails its
    /// probes (`reason` says which).
    AllocationDegraded,
    /// A degraded allocation's port passes its probes again.
    AllocationRecovered,
    /// An allocation expires within the configured lead time.
    AllocationExpiring,
    /// A modem went offline.
    ModemOffline,
    /// A modem came (back) online.
    ModemOnline,
    /// An IMEI is reported by more than one agent: no copy is sold until resolved.
    ModemDuplicateIdentity,
    /// An admin named the owner of a duplicate IMEI: its copy is sold again.
    ModemIdentityResolved,
    /// A modem's SIM was swapped, it was re-plugged, or it moved to another box.
    ModemIdentityChanged,
    /// An agent's session was authenticated.
    AgentConnected,
    /// An agent's session ended.
    AgentDisconnected,
    /// An agent's box ran past a health limit (disk, memory): no new allocations there.
    AgentHealthLimited,
    /// An agent's box is back within the health limits.
    AgentHealthRecovered,
}

impl EventType {
    /// Every type, for validation and docs.
    pub const ALL: [EventType; 16] = [
        Self::AllocationActive,
        Self::AllocationReleased,
        Self::AllocationFailed,
        Self::AllocationReplaced,
        Self::AllocationDegraded,
        Self::AllocationRecovered,
        Self::AllocationExpiring,
        Self::ModemOffline,
        Self::ModemOnline,
        Self::ModemDuplicateIdentity,
        Self::ModemIdentityResolved,
        Self::ModemIdentityChanged,
        Self::AgentConnected,
        Self::AgentDisconnected,
        Self::AgentHealthLimited,
        Self::AgentHealthRecovered,
    ];

    /// The dotted wire name (`allocation.active`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllocationActive => "allocation.active",
            Self::AllocationReleased => "allocation.released",
            Self::AllocationFailed => "allocation.failed",
            Self::AllocationReplaced => "allocation.replaced",
            Self::AllocationDegraded => "allocation.degraded",
            Self::AllocationRecovered => "allocation.recovered",
            Self::AllocationExpiring => "allocation.expiring",
            Self::ModemOffline => "modem.offline",
            Self::ModemOnline => "modem.online",
            Self::ModemDuplicateIdentity => "modem.duplicate_identity",
            Self::ModemIdentityResolved => "modem.identity_resolved",
            Self::ModemIdentityChanged => "modem.identity_changed",
            Self::AgentConnected => "agent.connected",
            Self::AgentDisconnected => "agent.disconnected",
            Self::AgentHealthLimited => "agent.health_limited",
            Self::AgentHealthRecovered => "agent.health_recovered",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Where emitted events go: the webhook outbox (`webhooks` implements it). A trait so that
/// this layer, which producers import, does not import the delivery layer above it.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Whether any subscriber wants `kind` (cheap: producers ask before building one).
    fn wants(&self, kind: EventType) -> bool;
    /// Stores `kind` happening to `object` for delivery.
    fn enqueue(&self, kind: EventType, object: Value) -> BoxFuture<'_, Result<(), String>>;
    /// The deliveries of `kind` happening to `object`, for the caller to store in the
    /// same step as the change (`Store::save_change`); then [`EventSink::stored`].
    fn prepare(
        &self,
        kind: EventType,
        object: Value,
    ) -> BoxFuture<'_, Result<Vec<crate::store::Delivery>, crate::store::StoreError>>;
    /// Deliveries from [`EventSink::prepare`] were stored.
    fn stored(&self);
}

/// What [`EventSink::enqueue`] returns: a boxed future keeps the trait usable as `dyn`.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The handle producers emit through. Cheap to clone. The default one (no webhooks) only
/// logs.
#[derive(Debug, Clone, Default)]
pub struct Events {
    sink: Option<std::sync::Arc<dyn EventSink>>,
}

impl Events {
    /// Events stored in `sink` (the webhook outbox).
    pub fn new(sink: std::sync::Arc<dyn EventSink>) -> Self {
        Events { sink: Some(sink) }
    }

    /// Whether any endpoint subscribes to `kind` (one atomic load): producers skip
    /// building an event nobody wants.
    pub fn wants(&self, kind: EventType) -> bool {
        self.sink.as_ref().is_some_and(|w| w.wants(kind))
    }

    /// The deliveries of `kind` happening to `object`, to be stored with the change it
    /// reports (none without a sink). An error (the endpoints could not be read) is the
    /// change's too: a change is not stored without its deliveries.
    pub async fn prepare(
        &self,
        kind: EventType,
        object: Value,
    ) -> Result<Vec<crate::store::Delivery>, crate::store::StoreError> {
        match &self.sink {
            Some(sink) => sink.prepare(kind, object).await,
            None => Ok(Vec::new()),
        }
    }

    /// Deliveries from [`Events::prepare`] were stored.
    pub fn stored(&self) {
        if let Some(sink) = &self.sink {
            sink.stored();
        }
    }

    /// Records that `kind` happened to `object` (never a credential in it).
    pub async fn emit(&self, kind: EventType, object: Value) {
        tracing::debug!(event = kind.as_str(), "event");
        let Some(sink) = &self.sink else {
            return;
        };
        if let Err(e) = sink.enqueue(kind, object).await {
            tracing::error!(
                event = kind.as_str(),
                "cannot store an event for webhooks: {e}"
            );
        }
    }
}

/// An agent as `agent.connected` / `agent.disconnected` show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentEvent {
    agent_id: String,
    /// The label of the token that enrolled it.
    label: String,
    hostname: String,
    agent_version: String,
    /// True for `agent.connected`.
    connected: bool,
    /// Why the session ended (`agent.disconnected` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// An agent as events show it; `reason` says why a session ended.
pub fn agent_object(
    agent_id: &str,
    label: &str,
    hostname: &str,
    agent_version: &str,
    reason: Option<&str>,
) -> Value {
    to_object(&AgentEvent {
        agent_id: agent_id.to_string(),
        label: label.to_string(),
        hostname: hostname.to_string(),
        agent_version: agent_version.to_string(),
        connected: reason.is_none(),
        reason: reason.map(str::to_string),
    })
}

/// A modem as `modem.online` / `modem.offline` show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModemEvent {
    imei: String,
    agent_id: String,
    carrier: Option<String>,
    country: Option<String>,
    city: Option<String>,
    ext_ip: Option<String>,
    online: bool,
    signal: Option<i32>,
    model: Option<String>,
    /// `status_changed`, or `removed` (no longer in its agent's inventory).
    reason: String,
}

/// A modem as events show it; `reason` is `status_changed` or `removed` (no longer in its
/// agent's inventory).
pub fn modem_object(agent_id: &str, site: Option<&Site>, modem: &Modem, reason: &str) -> Value {
    to_object(&ModemEvent {
        imei: modem.imei.clone(),
        agent_id: agent_id.to_string(),
        carrier: modem.carrier.clone(),
        country: site.map(|s| s.country.clone()),
        city: site.and_then(|s| s.city.clone()),
        ext_ip: modem.ext_ip.clone(),
        online: modem.online,
        signal: modem.signal,
        model: modem.model.clone(),
        reason: reason.to_string(),
    })
}

/// An IMEI several agents report (`modem.duplicate_identity`), or its resolution
/// (`modem.identity_resolved`, with `owner`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityEvent {
    pub(crate) imei: String,
    /// Every agent that reports it.
    pub(crate) agent_ids: Vec<String>,
    /// The agent an admin named its owner (`modem.identity_resolved` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
    /// Allocations on its copies (`modem.duplicate_identity` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) live_allocations: Option<usize>,
    pub(crate) resolved: bool,
}

/// A box crossing a health limit (`agent.health_limited` / `agent.health_recovered`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthEvent {
    pub(crate) agent_id: String,
    /// `disk`, `memory`, …
    pub(crate) resource: String,
    pub(crate) reason: String,
}

/// The allocation as events show it: the API's allocation object without `login` and
/// `password` (webhook payloads travel to and are stored by third parties).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllocationEvent {
    allocation_id: String,
    order_id: String,
    state: crate::store::AllocationState,
    imei: String,
    agent_id: String,
    carrier: Option<String>,
    country: Option<String>,
    host: Option<String>,
    http_port: Option<u16>,
    socks_port: Option<u16>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(format = DateTime)]
    released_at: Option<String>,
    release_reason: Option<crate::store::ReleaseReason>,
    failure: Option<String>,
    tenant: String,
    /// Why it is degraded (`allocation.degraded` from probes: `timeout`, `connect_failed`,
    /// `proxy_error`, `bad_reply`, `slow`, `ip_mismatch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The allocation as events show it (see [`AllocationEvent`]).
pub fn allocation_object(record: &AllocationRecord) -> Value {
    allocation_object_because(record, None)
}

/// [`allocation_object`] with the `reason` of a degradation.
pub fn allocation_object_because(record: &AllocationRecord, reason: Option<&str>) -> Value {
    to_object(&AllocationEvent {
        allocation_id: record.allocation_id.clone(),
        order_id: record.order_id.clone(),
        state: record.state,
        imei: record.imei.clone(),
        agent_id: record.agent_id.clone(),
        carrier: record.carrier.clone(),
        country: record.country.clone(),
        host: record.host.clone(),
        http_port: record.http_port,
        socks_port: record.socks_port,
        created_at: crate::ids::rfc3339(record.created_at),
        expires_at: crate::ids::rfc3339(record.expires_at),
        released_at: record.released_at.map(crate::ids::rfc3339),
        release_reason: record.release_reason,
        failure: record.failure.clone(),
        tenant: record.tenant.clone(),
        reason: reason.map(str::to_string),
    })
}

/// An event object as the JSON it is sent as (our own types always serialise).
pub fn to_object(object: &impl Serialize) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

impl EventType {
    /// The name of the schema of this type's `object` (the OpenAPI document's webhooks).
    pub fn object_schema(self) -> &'static str {
        match self {
            Self::AllocationActive
            | Self::AllocationReleased
            | Self::AllocationFailed
            | Self::AllocationReplaced
            | Self::AllocationDegraded
            | Self::AllocationRecovered
            | Self::AllocationExpiring => "AllocationEvent",
            Self::ModemOffline | Self::ModemOnline => "ModemEvent",
            Self::ModemDuplicateIdentity | Self::ModemIdentityResolved => "IdentityEvent",
            Self::ModemIdentityChanged => "IdentityChange",
            Self::AgentConnected | Self::AgentDisconnected => "AgentEvent",
            Self::AgentHealthLimited | Self::AgentHealthRecovered => "HealthEvent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_name_parses_back() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("allocation.activ"), None);
    }
}
