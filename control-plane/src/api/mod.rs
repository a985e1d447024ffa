//! The REST API (`docs/api.md`), one file per resource. Routes are grouped by who may call
//! them: unauthenticated (health, metrics, enrollment, the agent WebSocket), admin (keys,
//! enrollment tokens, agents, audit log) and admin-or-marketplace (modems, allocations,
//! webhooks — a marketplace key sees its own tenant's only). Unknown routes and methods
//! answer in the same JSON error shape as everything else.

mod agents;
mod allocations;
mod audit;
pub(crate) mod auth;
pub mod console;
mod csv;
mod enroll;
mod error;
mod health;
mod json;
mod keys;
mod metrics;
mod modems;
pub mod openapi;
mod probes;
mod quality;
pub(crate) mod seller;
mod seller_data;
mod tokens;
mod webhooks;

use crate::allocator::Allocator;
use crate::config::ServerConfig;
use crate::fleet::Fleet;
use crate::gateway::Gateway;
use crate::http_error::ApiError;
use crate::ratelimit::Limits;
use crate::store::Store;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Durable state.
    pub store: Store,
    /// The live fleet view.
    pub fleet: Arc<Fleet>,
    /// The agent gateway.
    pub gateway: Gateway,
    /// The allocation engine.
    pub allocator: Arc<Allocator>,
    /// The configuration.
    pub config: Arc<ServerConfig>,
    /// Abuse limits shared with the gateway.
    pub limits: Arc<Limits>,
    /// Counters and histograms behind `GET /metrics`.
    pub metrics: Arc<crate::metrics::PlaneMetrics>,
    /// Where events go (webhooks).
    pub events: crate::events::Events,
    /// Webhook endpoints and their delivery logs.
    pub webhooks: crate::webhooks::Webhooks,
    /// Whether probes run (`[probe] enabled`).
    pub probing: bool,
    /// Signed-in console sessions.
    pub console: std::sync::Arc<console::session::Sessions>,
    /// The console's per-minute samples of the fleet.
    pub trends: std::sync::Arc<console::trend::Trends>,
}

/// The whole HTTP application: REST routes plus the agent gateway.
pub fn router(state: AppState) -> Router {
    let gateway = state.gateway.router();
    let counted = state.clone();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/agent/enroll", post(enroll::enroll))
        .route(
            "/v1/enrollment-tokens",
            get(tokens::list).post(tokens::create),
        )
        .route(
            "/v1/enrollment-tokens/{token_id}",
            axum::routing::delete(tokens::revoke),
        )
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{key_id}", axum::routing::delete(keys::revoke))
        .route("/v1/audit", get(audit::list))
        .route("/v1/agents", get(agents::list))
        .route(
            "/v1/agents/{agent_id}",
            get(agents::show).delete(agents::revoke),
        )
        .route("/v1/agents/{agent_id}/approve", post(agents::approve))
        .route("/v1/agents/{agent_id}/quality", get(quality::agent))
        .route("/v1/quality", get(quality::rank))
        .route("/v1/seller/boxes", get(seller::boxes))
        .route("/v1/seller/usage", get(seller::usage))
        .route("/v1/agents/{agent_id}/export", get(seller_data::export))
        .route("/v1/agents/{agent_id}/erase", post(seller_data::erase))
        .route("/v1/modems", get(modems::list))
        .route("/v1/modems/{imei}/rotate", post(modems::rotate))
        .route("/v1/modems/{imei}/resolve", post(modems::resolve))
        .route(
            "/v1/allocations",
            get(allocations::list).post(allocations::create),
        )
        .route(
            "/v1/allocations/{allocation_id}",
            get(allocations::show).delete(allocations::release),
        )
        .route(
            "/v1/allocations/{allocation_id}/renew",
            post(allocations::renew),
        )
        .route(
            "/v1/allocations/{allocation_id}/usage",
            get(allocations::usage),
        )
        .route("/v1/allocations/{allocation_id}/probes", get(probes::show))
        .route(
            "/v1/allocations/{allocation_id}/replace",
            post(allocations::replace),
        )
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/v1/webhooks/{webhook_id}",
            get(webhooks::show).delete(webhooks::remove),
        )
        .route(
            "/v1/webhooks/{webhook_id}/deliveries",
            get(webhooks::deliveries),
        )
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A key revoked while its request ran does not get the answer.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::recheck,
        ))
        .with_state(state)
        .merge(gateway)
        // Outermost, so every request is counted by the route it matched.
        .layer(axum::middleware::from_fn_with_state(
            counted,
            metrics::track_requests,
        ))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support that method",
    )
}
