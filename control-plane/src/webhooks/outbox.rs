//! Turning an event into deliveries: the event is serialised ONCE (`{"id","type",
//! "created_at","object"}`, the exact bytes every endpoint receives and that are signed),
//! and one pending delivery per subscribed endpoint is written in one transaction — with
//! the change the event reports, where there is one ([`Webhooks::prepare`], then
//! `Store::save_change`), so a change that reached the store is never without its
//! deliveries.
//!
//! Which types anyone subscribes to is kept in an atomic bit set, refreshed whenever an
//! endpoint is added or removed, so an event nobody wants costs one atomic load — the
//! gateway asks before it even computes modem transitions.

use super::Webhooks;
use crate::events::{BoxFuture, EventType};
use crate::ids::{now, random_id, rfc3339};
use crate::store::{Delivery, DeliveryState, StoreError, WebhookEndpoint};
use serde_json::Value;
use std::sync::atomic::Ordering;

fn bit(kind: EventType) -> u32 {
    let index = EventType::ALL.iter().position(|t| *t == kind).unwrap_or(0);
    1 << index
}

fn wants(endpoint: &WebhookEndpoint, kind: EventType) -> bool {
    endpoint
        .events
        .iter()
        .any(|e| e == super::endpoint::ALL_EVENTS || e == kind.as_str())
}

/// Whether `endpoint` may receive this event: an operator's gets everything; a tenant's
/// gets its own allocations' events and modem events (what `GET /v1/modems` shows every
/// marketplace), never another tenant's allocations or the agents' events.
fn sees(endpoint: &WebhookEndpoint, kind: EventType, object: &Value) -> bool {
    let Some(tenant) = &endpoint.tenant else {
        return true;
    };
    match kind.as_str().split_once('.').map(|(family, _)| family) {
        Some("allocation") => object["tenant"].as_str() == Some(tenant.as_str()),
        Some("modem") => true,
        _ => false,
    }
}

/// The body every endpoint receives for one event, exactly as signed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Envelope<'a> {
    /// `ev_…`: the same for every endpoint and every retry (de-duplicate on it).
    pub id: String,
    /// The event type, e.g. `allocation.active`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it happened (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// What it happened to; its shape depends on `type`.
    #[schema(value_type = Object)]
    pub object: &'a serde_json::Value,
}

impl Webhooks {
    /// Whether any endpoint subscribes to `kind` (in a cluster, maybe: another node may
    /// have added an endpoint this one has not heard of, so `enqueue` reads them).
    pub fn wants(&self, kind: EventType) -> bool {
        self.inner.store.is_shared()
            || self.inner.subscribed.load(Ordering::Relaxed) & bit(kind) != 0
    }

    /// Re-reads which types are subscribed (after an endpoint was added or removed).
    pub(super) async fn refresh_subscriptions(&self) -> Result<(), StoreError> {
        let endpoints = self.inner.store.webhook_endpoints().await?;
        let mask = EventType::ALL
            .iter()
            .filter(|kind| endpoints.iter().any(|e| wants(e, **kind)))
            .fold(0, |mask, kind| mask | bit(*kind));
        self.inner.subscribed.store(mask, Ordering::Relaxed);
        Ok(())
    }

    /// Stores one pending delivery of the event per subscribed endpoint and wakes the
    /// deliverer; returns how many were stored.
    pub async fn enqueue(&self, kind: EventType, object: Value) -> Result<usize, StoreError> {
        let deliveries = self.prepare(kind, object).await?;
        if deliveries.is_empty() {
            return Ok(0);
        }
        self.inner.store.enqueue_deliveries(&deliveries).await?;
        self.stored();
        Ok(deliveries.len())
    }

    /// The deliveries of the event, one per subscribed endpoint, for the caller to store
    /// (with the change it reports); then [`Webhooks::stored`].
    pub async fn prepare(
        &self,
        kind: EventType,
        object: Value,
    ) -> Result<Vec<Delivery>, StoreError> {
        if !self.wants(kind) {
            return Ok(Vec::new());
        }
        let store = &self.inner.store;
        let endpoints: Vec<WebhookEndpoint> = store
            .webhook_endpoints()
            .await?
            .into_iter()
            .filter(|e| wants(e, kind) && sees(e, kind, &object))
            .collect();
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let event_id = random_id("ev");
        let created_at = now();
        let body = serde_json::to_string(&Envelope {
            id: event_id.clone(),
            kind: kind.as_str(),
            created_at: rfc3339(created_at),
            object: &object,
        })
        .unwrap_or_default();
        let mut deliveries = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            deliveries.push(Delivery {
                seq: store.next_delivery_seq().await?,
                webhook_id: endpoint.webhook_id,
                event_id: event_id.clone(),
                event_type: kind.as_str().to_string(),
                state: DeliveryState::Pending,
                attempts: 0,
                created_at,
                next_attempt_at: Some(created_at),
                finished_at: None,
                last_status: None,
                last_error: None,
                body: body.clone(),
            });
        }
        Ok(deliveries)
    }

    /// Prepared deliveries were stored: the deliverer goes to work.
    pub fn stored(&self) {
        self.inner.unflushed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

impl crate::events::EventSink for Webhooks {
    fn wants(&self, kind: EventType) -> bool {
        Webhooks::wants(self, kind)
    }

    fn enqueue(&self, kind: EventType, object: Value) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            Webhooks::enqueue(self, kind, object)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    fn prepare(
        &self,
        kind: EventType,
        object: Value,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        Box::pin(Webhooks::prepare(self, kind, object))
    }

    fn stored(&self) {
        Webhooks::stored(self);
    }
}
