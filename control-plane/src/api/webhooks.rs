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
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

/// Deliveries listed when `limit` is omitted.
pub const DEFAULT_DELIVERY_LIMIT: usize = 50;
/// Most deliveries one request lists.
pub const MAX_DELIVERY_LIMIT: usize = 1000;

/// `POST /v1/webhooks` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://…` (`http://` only for `[webhooks] allow_private_targets`); its host must
    /// not be a private address unless allowed.
    #[schema(
        pattern = r"^https?://[^\s/?#@]+([/?#]\S*)?$",
        example = "https://shop.example.com/farmhand/events"
    )]
    url: String,
    /// Event types, or `["*"]` for every one.
    #[schema(value_type = Vec<EventName>, min_items = 1,
        example = json!(["allocation.active", "allocation.released"]))]
    events: Vec<String>,
    /// Admins: register it for this tenant (marketplace keys: always their own).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    tenant: Option<String>,
}

/// An event type's wire name, or `*` (every type): the schema lists them from
/// [`crate::events::EventType::ALL`].
#[derive(Debug)]
pub struct EventName;

impl utoipa::PartialSchema for EventName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = crate::events::EventType::ALL
            .iter()
            .map(|t| t.as_str())
            .chain(["*"]);
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl utoipa::ToSchema for EventName {}

/// `GET /v1/webhooks/{id}/deliveries` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Deliveries to list, newest first (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// An endpoint (its secret only in the answer to its creation).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"webhook_id": "wh_5d2e…", "url": "https://shop.example.com/farmhand/events",
    "events": ["allocation.active", "allocation.released"], "created_at": "2026-12-07T09:00:00Z",
    "tenant": null, "secret": "whsec_… (in the answer to its creation only)"}))]
pub struct WebhookView {
    #[schema(example = "wh_…")]
    webhook_id: String,
    url: String,
    events: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// The tenant whose events it gets; `null`: an operator's endpoint (every event).
    tenant: Option<String>,
    /// The signing secret (`whsec_…`): in the answer to its creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// `{"webhooks": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    webhooks: Vec<WebhookView>,
}

/// One delivery of one event to the endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    #[schema(example = "dl_…")]
    delivery_id: String,
    event_id: String,
    event_type: String,
    /// `pending`, `delivered` or `failed` (given up).
    state: &'static str,
    attempts: u32,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    last_status: Option<u16>,
    last_error: Option<String>,
}

/// `{"deliveries": [...]}`, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(message) => ApiError::invalid(message),
            other => ApiError::internal(&other),
        }
    }
}

fn view(endpoint: &WebhookEndpoint) -> WebhookView {
    WebhookView {
        webhook_id: endpoint.webhook_id.clone(),
        url: endpoint.url.clone(),
        events: endpoint.events.clone(),
        created_at: rfc3339(endpoint.created_at),
        tenant: endpoint.tenant.clone(),
        secret: None,
    }
}

/// The endpoint `id` if `caller` may manage it (404 otherwise, as if unknown).
async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<WebhookEndpoint, ApiError> {
    state
        .webhooks
        .endpoint(id)
        .await?
        .filter(|e| caller.tenant.is_none() || e.tenant == caller.tenant)
        .ok_or_else(|| unknown(id))
}

fn delivery_view(delivery: &Delivery) -> DeliveryView {
    DeliveryView {
        delivery_id: delivery.delivery_id(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        state: delivery.state.as_str(),
        attempts: delivery.attempts,
        created_at: rfc3339(delivery.created_at),
        next_attempt_at: delivery.next_attempt_at.map(rfc3339),
        finished_at: delivery.finished_at.map(rfc3339),
        last_status: delivery.last_status,
        last_error: delivery.last_error.clone(),
    }
}

/// 201 with the endpoint and `secret`.
#[utoipa::path(post, operation_id = "create_webhook", path = "/v1/webhooks", tag = "webhooks",
    security(("admin" = []), ("marketplace" = [])), request_body = CreateWebhook,
    responses((status = 201, description = "Registered; `secret` is shown this once.", body = WebhookView)))]
pub async fn create(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
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
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::WebhookCreated,
            format!("webhook:{}", endpoint.webhook_id),
            json!({"events": endpoint.events, "tenant": endpoint.tenant}),
        )
        .await;
    let mut answer = view(&endpoint);
    answer.secret = Some(secret.expose().to_string());
    Ok((StatusCode::CREATED, Json(answer)))
}

/// 200 `{"webhooks":[...]}`.
#[utoipa::path(get, operation_id = "list_webhooks", path = "/v1/webhooks", tag = "webhooks",
    security(("admin" = []), ("marketplace" = [])),
    responses((status = 200, description = "The endpoints the key may manage.", body = WebhookList)))]
pub async fn list(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
) -> Result<Json<WebhookList>, ApiError> {
    let webhooks = state
        .webhooks
        .endpoints()
        .await?
        .iter()
        .filter(|e| caller.tenant.is_none() || e.tenant == caller.tenant)
        .map(view)
        .collect();
    Ok(Json(WebhookList { webhooks }))
}

/// 200 with one endpoint; 404 when unknown.
#[utoipa::path(get, operation_id = "get_webhook", path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    security(("admin" = []), ("marketplace" = [])),
    params(("webhook_id" = String, Path, description = "`wh_…`")),
    responses(
        (status = 200, description = "The endpoint.", body = WebhookView),
        (status = 404, description = "No such endpoint for this key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn show(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(view(&visible(&state, &caller, &id).await?)))
}

/// 204; 404 when unknown.
#[utoipa::path(delete, operation_id = "delete_webhook", path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    security(("admin" = []), ("marketplace" = [])),
    params(("webhook_id" = String, Path, description = "`wh_…`")),
    responses(
        (status = 204, description = "Deleted; its undelivered events are dropped."),
        (status = 404, description = "No such endpoint for this key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn remove(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    visible(&state, &caller, &id).await?;
    if !state.webhooks.remove(&id).await? {
        return Err(unknown(&id));
    }
    info!(webhook_id = %id, by = %caller.name, "webhook deleted");
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::WebhookDeleted,
            format!("webhook:{id}"),
            json!({}),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// 200 `{"deliveries":[...]}`, newest first; 404 when the endpoint is unknown.
#[utoipa::path(get, operation_id = "list_webhook_deliveries", path = "/v1/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    security(("admin" = []), ("marketplace" = [])),
    params(("webhook_id" = String, Path, description = "`wh_…`"), DeliveriesQuery),
    responses(
        (status = 200, description = "The delivery log, newest first.", body = DeliveryList),
        (status = 404, description = "No such endpoint for this key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn deliveries(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_DELIVERY_LIMIT);
    if !(1..=MAX_DELIVERY_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_DELIVERY_LIMIT}"
        )));
    }
    visible(&state, &caller, &id).await?;
    let deliveries = state
        .webhooks
        .deliveries(&id, limit)
        .await?
        .iter()
        .map(delivery_view)
        .collect();
    Ok(Json(DeliveryList { deliveries }))
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook {id:?}"))
}
