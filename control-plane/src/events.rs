//! Domain events the marketplace can subscribe to with webhooks (`docs/api.md`): what
//! happened, to which object, when. Producers (allocator, gateway sessions) call
//! [`Events::emit`]; it stores one delivery per subscribed endpoint in the durable outbox
//! (`webhooks`) and never waits on the network. A storage error is logged, never returned:
//! the change the event describes has already happened.
//!
//! Modem events fire on transitions only ([`modem_transitions`]): a modem the plane sees for
//! the first time (an agent's first inventory after connecting, or after a plane restart)
//! is not a transition, and an agent's disconnect does not turn its modems offline (that
//! is `agent.disconnected`); when the agent reconnects, its inventory is compared with the
//! last known state, so only real changes produce events — no storm when 10,000 agents
//! reconnect.

use crate::fleet::LiveAgent;
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

/// The modem events between two states of one agent: a known modem whose `online` flag
/// flipped, or a known online modem that left the inventory (offline, `removed`). Modems
/// seen for the first time produce nothing.
pub fn modem_transitions(
    agent_id: &str,
    before: &LiveAgent,
    after: &LiveAgent,
) -> Vec<(EventType, Value)> {
    let site = after.site.as_ref().or(before.site.as_ref());
    let mut out = Vec::new();
    for (imei, old) in &before.modems {
        match after.modems.get(imei) {
            Some(new) if new.online != old.online => {
                let kind = if new.online {
                    EventType::ModemOnline
                } else {
                    EventType::ModemOffline
                };
                out.push((kind, modem_object(agent_id, site, new, "status_changed")));
            }
            None if old.online => {
                let gone = Modem {
                    online: false,
                    ..old.clone()
                };
                let object = modem_object(agent_id, site, &gone, "removed");
                out.push((EventType::ModemOffline, object));
            }
            _ => {}
        }
    }
    out
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

    fn modem(imei: &str, online: bool) -> Modem {
        Modem {
            imei: imei.into(),
            nick: "n".into(),
            carrier: Some("Vodafone".into()),
            ext_ip: Some("198.51.100.1".into()),
            online,
            rotating: false,
            signal: Some(20),
            model: None,
            ..Modem::default()
        }
    }

    fn agent(modems: &[Modem]) -> LiveAgent {
        let mut agent = LiveAgent::default();
        agent.modems = modems.iter().map(|m| (m.imei.clone(), m.clone())).collect();
        agent
    }

    #[test]
    fn only_known_modems_that_flip_or_leave_online_make_events() {
        let empty = agent(&[]);
        let first = agent(&[modem("1", true), modem("2", false), modem("3", true)]);
        assert!(
            modem_transitions("a", &empty, &first).is_empty(),
            "first sight is not a transition"
        );
        assert!(modem_transitions("a", &first, &first).is_empty());
        let later = agent(&[modem("1", false), modem("2", true), modem("4", true)]);
        let events: Vec<(EventType, String, String)> = modem_transitions("a", &first, &later)
            .into_iter()
            .map(|(kind, o)| {
                let imei = o["imei"].as_str().unwrap().to_string();
                (kind, imei, o["reason"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(
            events,
            vec![
                (EventType::ModemOffline, "1".into(), "status_changed".into()),
                (EventType::ModemOnline, "2".into(), "status_changed".into()),
                (EventType::ModemOffline, "3".into(), "removed".into()),
            ]
        );
        let gone = agent(&[]);
        let offline_gone = agent(&[modem("9", false)]);
        assert!(
            modem_transitions("a", &offline_gone, &gone).is_empty(),
            "an offline modem that leaves is not news"
        );
    }

    #[test]
    fn every_wire_name_parses_back() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("allocation.activ"), None);
    }
}
