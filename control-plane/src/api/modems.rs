//! `GET /v1/modems` (filters: country, carrier, online, available, imei; each modem with
//! its `last_rotation`) and `POST /v1/modems/{imei}/rotate` (409 `rotation_cooldown` with
//! `Retry-After` while the modem's cooldown runs, see `allocator::rotate`) — admin or
//! marketplace.

use super::auth::AnyRole;
use super::error::ApiError;
use super::json::{ApiPath, ApiQuery};
use super::AppState;
use crate::allocator::{LastRotation, Rotation};
use crate::fleet::{ModemFilter, ModemView};
use crate::store::AuditAction;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
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

/// The body of `GET /v1/modems`, serialised straight to bytes: going through a
/// `serde_json::Value` built a map per modem, ~2 KiB each — 160 MB of short-lived heap for
/// 80,000 modems, which the allocator then kept.
#[derive(Debug, Serialize)]
pub struct ModemList {
    modems: Vec<ModemWithRotation>,
}

/// A modem of the fleet view with its last IP rotation (`null` when none is recorded).
#[derive(Debug, Serialize)]
struct ModemWithRotation {
    #[serde(flatten)]
    modem: ModemView,
    last_rotation: Option<LastRotation>,
}

/// 200 `{"modems":[...]}`. The rotations come from memory (`store::rotations`): a full
/// listing does no storage lookup per modem.
pub async fn list(
    _: AnyRole,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ModemQuery>,
) -> Json<ModemList> {
    let filter = ModemFilter {
        country: q.country,
        carrier: q.carrier,
        imei: q.imei,
        online: q.online,
        available: q.available,
        ..ModemFilter::default()
    };
    let modems = state.fleet.modems(&filter);
    let rotations = state
        .allocator
        .last_rotations(modems.iter().map(|m| m.imei.as_str()));
    let modems = modems
        .into_iter()
        .zip(rotations)
        .map(|(modem, last_rotation)| ModemWithRotation {
            modem,
            last_rotation,
        })
        .collect();
    Json(ModemList { modems })
}

/// 200 `{"imei","old_ip","new_ip","changed","rotated_at"}`; 404; 503 `agent_offline`; 409
/// `rotation_cooldown` with `Retry-After`; 502 `rotation_failed`; 504 `agent_timeout`.
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
        json!({"old_ip": rotation.old_ip, "new_ip": rotation.new_ip,
               "changed": rotation.changed, "automatic": false}),
    );
    Ok(Json(rotation))
}
