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
use serde_json::{json, Value};

/// 200 `{"status":"ok"}`.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 `{"status":"ready"}`, or 503 `not_ready`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let storage = state.store.agents().is_ok();
    let gateway = state.gateway.is_accepting();
    if storage && gateway {
        Ok(Json(json!({"status": "ready"})))
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
pub async fn metrics(
    State(state): State<AppState>,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    if state.config.metrics.require_admin {
        Admin::from_request_parts(&mut parts, &state).await?;
    }
    super::metrics::render(&state).await
}
