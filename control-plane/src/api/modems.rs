//! `GET /v1/modems` (filters: country, carrier, online, available, imei; each modem with
//! its `last_rotation`) and `POST /v1/modems/{imei}/rotate` (409 `rotation_cooldown` with
//! `Retry-After` while the modem's cooldown runs, see `allocator::rotate`; 409
//! `duplicate_identity` while several agents report it) — admin or marketplace; and
//! `POST /v1/modems/{imei}/resolve` (admin): names the agent that owns an IMEI several
//! agents report, so its copy is sold again.

use super::auth::{Admin, AnyRole};
use super::json::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::allocator::{LastRotation, Rotation};
use crate::events::EventType;
use crate::fleet::{ModemFilter, ModemView};
use crate::http_error::ApiError;
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
    let rotations = state.allocator.last_rotations(
        modems
            .iter()
            .map(|m| (m.agent_id.as_str(), m.imei.as_str())),
    );
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

/// `POST /v1/modems/{imei}/resolve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The agent whose copy of the IMEI is the real modem.
    agent_id: String,
}

/// 200 `{"imei","owner","agent_ids"}`: `owner`'s copy is sold again, every other
/// reporter's never (until resolved again); 404 when no agent reports the IMEI; 422 when
/// `agent_id` does not. Stored, audited (`modem_identity_resolved`), and
/// `modem.identity_resolved` is emitted.
pub async fn resolve(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(imei): ApiPath,
    ApiJson(body): ApiJson<ResolveRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let holders = state.fleet.holders(&imei);
    if holders.is_empty() {
        return Err(ApiError::not_found(format!(
            "no agent reports modem {imei:?}"
        )));
    }
    if !holders.contains(&body.agent_id) {
        return Err(ApiError::invalid(format!(
            "agent {:?} does not report modem {imei:?} (reported by: {})",
            body.agent_id,
            holders.join(", ")
        )));
    }
    state.store.set_modem_owner(&imei, &body.agent_id)?;
    state.fleet.set_owner(&imei, &body.agent_id);
    info!(imei = %imei, owner = %body.agent_id, by = %caller.name, "duplicate IMEI resolved");
    state.store.audit(
        caller.actor(),
        AuditAction::ModemIdentityResolved,
        format!("modem:{imei}"),
        json!({"owner": body.agent_id, "agent_ids": holders}),
    );
    let answer = json!({"imei": imei, "owner": body.agent_id, "agent_ids": holders});
    let mut object = answer.clone();
    object["resolved"] = json!(true);
    state.events.emit(EventType::ModemIdentityResolved, object);
    Ok(Json(answer))
}
