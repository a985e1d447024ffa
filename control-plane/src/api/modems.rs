//! `GET /v1/modems` (filters: country, carrier, online, available, imei) and
//! `POST /v1/modems/{imei}/rotate` — admin or marketplace.

use super::auth::AnyRole;
use super::error::ApiError;
use super::json::{ApiPath, ApiQuery};
use super::AppState;
use crate::allocator::Rotation;
use crate::fleet::ModemFilter;
use crate::store::AuditAction;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

/// Query filters; unknown parameters are rejected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemQuery {
    country: Option<String>,
    carrier: Option<String>,
    imei: Option<String>,
    online: Option<bool>,
    available: Option<bool>,
}

/// 200 `{"modems":[...]}`.
pub async fn list(
    _: AnyRole,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ModemQuery>,
) -> Json<Value> {
    let filter = ModemFilter {
        country: q.country,
        carrier: q.carrier,
        imei: q.imei,
        online: q.online,
        available: q.available,
    };
    Json(json!({ "modems": state.fleet.modems(&filter) }))
}

/// 200 `{"imei","old_ip","new_ip","changed","rotated_at"}`; 404; 503 `agent_offline`.
pub async fn rotate(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(imei): ApiPath,
) -> Result<Json<Rotation>, ApiError> {
    let rotation = state.allocator.rotate(&imei).await?;
    info!(imei = %imei, changed = rotation.changed, by = %caller.name, "modem IP rotated");
    state.store.audit(
        caller.actor(),
        AuditAction::IpRotated,
        format!("modem:{imei}"),
        json!({"old_ip": rotation.old_ip, "new_ip": rotation.new_ip, "changed": rotation.changed}),
    );
    Ok(Json(rotation))
}
