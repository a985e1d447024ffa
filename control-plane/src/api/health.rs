//! `GET /healthz` (the process serves), `GET /readyz` (storage open and the agent gateway
//! accepting) and `GET /metrics` (Prometheus text, see `crate::metrics`).

use super::auth::Admin;
use super::AppState;
use crate::http_error::ApiError;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Serialize;

/// `{"status": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    #[schema(example = "ok")]
    status: &'static str,
}

/// `/healthz`: the process serves, and on what storage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    status: &'static str,
    /// The store backend: `sled` or `postgres`.
    #[schema(example = "postgres")]
    store: &'static str,
    /// PostgreSQL: the database's schema version (`farmhand-control migrate --check`
    /// compares it with a release's); `null` on sled, or while the database cannot be
    /// reached.
    #[schema(example = 2)]
    schema_version: Option<i32>,
    /// PostgreSQL: this node's id in the cluster (`nd_…`, new at every start; what
    /// `GET /v1/agents` names as an agent's `node`); `null` on sled.
    #[schema(example = "nd_5f0c…")]
    node: Option<String>,
}

/// 200 `{"status":"ok","store":…,"schema_version":…,"node":…}`: answers while the process serves,
/// even when its database is away (`/readyz` says that).
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "health",
    responses((status = 200, description = "The process serves.", body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        store: state.store.backend(),
        schema_version: state.store.schema_version().await.ok().flatten(),
        node: state
            .store
            .is_shared()
            .then(|| state.gateway.node_id().to_string()),
    })
}

/// 200 `{"status":"ready"}`, or 503 `not_ready`.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "health", responses(
    (status = 200, description = "Storage open and the agent gateway accepting.", body = Status),
    (status = 503, description = "Not ready (`not_ready`).", body = crate::http_error::ErrorBody),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let storage = state.store.agents().await.is_ok();
    let gateway = state.gateway.is_accepting();
    if storage && gateway {
        Ok(Json(Status { status: "ready" }))
    } else {
        let message = format!("storage ok: {storage}, agent gateway accepting: {gateway}");
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            message,
        ))
    }
}

/// Prometheus text exposition (`crate::metrics`); admin keys only when
/// `[metrics] require_admin = true`.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "health", security((), ("admin" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4 (an admin key is needed \
        when `[metrics] require_admin = true`).", content_type = "text/plain", body = String)))]
pub async fn metrics(
    State(state): State<AppState>,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    if state.config.metrics.require_admin {
        Admin::from_request_parts(&mut parts, &state).await?;
    }
    super::metrics::render(&state).await
}
