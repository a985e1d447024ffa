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
use serde_json::{json, Value};

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
    /// An allocation's modem is dead and nothing could replace it.
    AllocationDegraded,
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
    pub const ALL: [EventType; 14] = [
        Self::AllocationActive,
        Self::AllocationReleased,
        Self::AllocationFailed,
        Self::AllocationReplaced,
        Self::AllocationDegraded,
        Self::AllocationExpiring,
        Self::ModemOffline,
        Self::ModemOnline,
        Self::ModemDuplicateIdentity,
        Self::ModemIdentityResolved,
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
            Self::AllocationExpiring => "allocation.expiring",
            Self::ModemOffline => "modem.offline",
            Self::ModemOnline => "modem.online",
            Self::ModemDuplicateIdentity => "modem.duplicate_identity",
            Self::ModemIdentityResolved => "modem.identity_resolved",
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
    fn enqueue(&self, kind: EventType, object: Value) -> Result<(), String>;
}

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

    /// Records that `kind` happened to `object` (never a credential in it).
    pub fn emit(&self, kind: EventType, object: Value) {
        tracing::debug!(event = kind.as_str(), "event");
        let Some(sink) = &self.sink else {
            return;
        };
        if let Err(e) = sink.enqueue(kind, object) {
            tracing::error!(
                event = kind.as_str(),
                "cannot store an event for webhooks: {e}"
            );
        }
    }
}

/// An agent as events show it; `reason` says why a session ended.
pub fn agent_object(
    agent_id: &str,
    label: &str,
    hostname: &str,
    agent_version: &str,
    reason: Option<&str>,
) -> Value {
    let mut object = json!({
        "agent_id": agent_id,
        "label": label,
        "hostname": hostname,
        "agent_version": agent_version,
        "connected": reason.is_none(),
    });
    if let Some(reason) = reason {
        object["reason"] = json!(reason);
    }
    object
}

/// A modem as events show it; `reason` is `status_changed` or `removed` (no longer in its
/// agent's inventory).
pub fn modem_object(agent_id: &str, site: Option<&Site>, modem: &Modem, reason: &str) -> Value {
    json!({
        "imei": modem.imei,
        "agent_id": agent_id,
        "carrier": modem.carrier,
        "country": site.map(|s| &s.country),
        "city": site.and_then(|s| s.city.as_ref()),
        "ext_ip": modem.ext_ip,
        "online": modem.online,
        "signal": modem.signal,
        "model": modem.model,
        "reason": reason,
    })
}

/// The allocation as events show it: the API's allocation object without `login` and
/// `password` (webhook payloads travel to and are stored by third parties).
pub fn allocation_object(record: &AllocationRecord) -> Value {
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    };
    json!({
        "allocation_id": record.allocation_id,
        "order_id": record.order_id,
        "state": record.state.as_str(),
        "imei": record.imei,
        "agent_id": record.agent_id,
        "carrier": record.carrier,
        "country": record.country,
        "host": record.host,
        "http_port": record.http_port,
        "socks_port": record.socks_port,
        "created_at": rfc3339(record.created_at),
        "expires_at": rfc3339(record.expires_at),
        "released_at": record.released_at.and_then(rfc3339),
        "release_reason": record.release_reason,
        "failure": record.failure,
        "tenant": record.tenant,
    })
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
