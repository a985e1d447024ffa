//! `/v1/webhooks`: register an endpoint (201, its signing secret shown this once), list and
//! show endpoints (never the secret), delete one (204; its undelivered events are dropped)
//! and read its delivery log, newest first (`?limit`, default 50, at most 1000).
//!
//! Admins manage operators' endpoints (every event) and may register one for a tenant;
//! a marketplace key manages its own tenant's endpoints only (its allocations' events and
//! modem events; another tenant's endpoints answer 404).

use super::auth::{AnyRole, Caller};
use super::json::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::rfc3339;
use crate::store::{AuditAction, Delivery, WebhookEndpoint};
use crate::webhooks::WebhookError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

/// Deliveries listed when `limit` is omitted.
pub const DEFAULT_DELIVERY_LIMIT: usize = 50;
/// Most deliveries one request lists.
pub const MAX_DELIVERY_LIMIT: usize = 1000;

/// `POST /v1/webhooks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    url: String,
    events: Vec<String>,
    /// Admins: register it for this tenant (marketplace keys: always their own).
    #[serde(default)]
    tenant: Option<String>,
}

/// `GET /v1/webhooks/{id}/deliveries` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    limit: Option<usize>,
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(message) => ApiError::invalid(message),
            other => ApiError::internal(&other),
        }
    }
}

fn view(endpoint: &WebhookEndpoint) -> Value {
    json!({
        "webhook_id": endpoint.webhook_id,
        "url": endpoint.url,
        "events": endpoint.events,
        "created_at": rfc3339(endpoint.created_at),
        "tenant": endpoint.tenant,
    })
}

/// The endpoint `id` if `caller` may manage it (404 otherwise, as if unknown).
fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<WebhookEndpoint, ApiError> {
    state
        .webhooks
        .endpoint(id)?
        .filter(|e| caller.tenant.is_none() || e.tenant == caller.tenant)
        .ok_or_else(|| unknown(id))
}

fn delivery_view(delivery: &Delivery) -> Value {
    json!({
        "delivery_id": delivery.delivery_id(),
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "state": delivery.state.as_str(),
        "attempts": delivery.attempts,
        "created_at": rfc3339(delivery.created_at),
        "next_attempt_at": delivery.next_attempt_at.map(rfc3339),
        "finished_at": delivery.finished_at.map(rfc3339),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
    })
}

/// 201 with the endpoint and `secret`.
pub async fn create(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = match (&caller.tenant, body.tenant) {
        (Some(own), Some(asked)) if *own != asked => return Err(ApiError::forbidden()),
        (Some(own), _) => Some(own.clone()),
        (None, Some(asked)) if !crate::store::valid_tenant(&asked) => {
            return Err(ApiError::invalid(
                "tenant must be 1–64 characters of [a-z0-9._-]",
            ))
        }
        (None, asked) => asked,
    };
    let (endpoint, secret) = state
        .webhooks
        .register(&body.url, &body.events, tenant.as_deref())
        .await?;
    info!(webhook_id = %endpoint.webhook_id, by = %caller.name, "webhook registered");
    state.store.audit(
        caller.actor(),
        AuditAction::WebhookCreated,
        format!("webhook:{}", endpoint.webhook_id),
        json!({"events": endpoint.events, "tenant": endpoint.tenant}),
    );
    let mut answer = view(&endpoint);
    answer["secret"] = json!(secret.expose());
    Ok((StatusCode::CREATED, Json(answer)))
}

/// 200 `{"webhooks":[...]}`.
pub async fn list(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let endpoints: Vec<Value> = state
        .webhooks
        .endpoints()?
        .iter()
        .filter(|e| caller.tenant.is_none() || e.tenant == caller.tenant)
        .map(view)
        .collect();
    Ok(Json(json!({ "webhooks": endpoints })))
}

/// 200 with one endpoint; 404 when unknown.
pub async fn show(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&visible(&state, &caller, &id)?)))
}

/// 204; 404 when unknown.
pub async fn remove(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    visible(&state, &caller, &id)?;
    if !state.webhooks.remove(&id)? {
        return Err(unknown(&id));
    }
    info!(webhook_id = %id, by = %caller.name, "webhook deleted");
    state.store.audit(
        caller.actor(),
        AuditAction::WebhookDeleted,
        format!("webhook:{id}"),
        json!({}),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// 200 `{"deliveries":[...]}`, newest first; 404 when the endpoint is unknown.
pub async fn deliveries(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_DELIVERY_LIMIT);
    if !(1..=MAX_DELIVERY_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_DELIVERY_LIMIT}"
        )));
    }
    visible(&state, &caller, &id)?;
    let list: Vec<Value> = state
        .webhooks
        .deliveries(&id, limit)?
        .iter()
        .map(delivery_view)
        .collect();
    Ok(Json(json!({ "deliveries": list })))
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook {id:?}"))
}
