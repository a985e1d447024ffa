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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ModemQuery {
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    country: Option<String>,
    /// Carrier name, case-insensitive.
    carrier: Option<String>,
    /// One modem.
    imei: Option<String>,
    /// Only modems ProxySmart reports online (or offline).
    online: Option<bool>,
    /// Only modems a new allocation could be placed on now (or not).
    available: Option<bool>,
}

/// The body of `GET /v1/modems`, serialised straight to bytes: going through a
/// `serde_json::Value` built a map per modem, ~2 KiB each — 160 MB of short-lived heap for
/// 80,000 modems, which the allocator then kept.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModemList {
    modems: Vec<ModemWithRotation>,
}

/// A modem of the fleet view with its last IP rotation (`null` when none is recorded).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ModemWithRotation {
    #[serde(flatten)]
    modem: ModemView,
    last_rotation: Option<LastRotation>,
}

/// 200 `{"modems":[...]}`. The rotations come in one storage read (sled answers from
/// memory, `store::rotations`): a full listing does no lookup per modem.
#[utoipa::path(get, operation_id = "list_modems", path = "/v1/modems", tag = "modems",
    security(("admin" = []), ("marketplace" = [])), params(ModemQuery),
    responses((status = 200, description = "The fleet's modems that match.", body = ModemList)))]
pub async fn list(
    _: AnyRole,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ModemQuery>,
) -> Result<Json<ModemList>, ApiError> {
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
        .last_rotations(
            modems
                .iter()
                .map(|m| (m.agent_id.as_str(), m.imei.as_str())),
        )
        .await?;
    let modems = modems
        .into_iter()
        .zip(rotations)
        .map(|(modem, last_rotation)| ModemWithRotation {
            modem,
            last_rotation,
        })
        .collect();
    Ok(Json(ModemList { modems }))
}

/// 200 `{"imei","old_ip","new_ip","changed","rotated_at"}`; 404; 503 `agent_offline`; 409
/// `rotation_cooldown` with `Retry-After`; 502 `rotation_failed`; 504 `agent_timeout`.
#[utoipa::path(post, operation_id = "rotate_modem", path = "/v1/modems/{imei}/rotate", tag = "modems",
    security(("admin" = []), ("marketplace" = [])),
    params(("imei" = String, Path, description = "The modem's IMEI.")),
    responses(
        (status = 200, description = "Rotated (`changed`: the IP is known to be new).", body = Rotation),
        (status = 404, description = "No such modem (`not_found`).", body = crate::http_error::ErrorBody),
        (status = 409, description = "`rotation_cooldown` (with `Retry-After`) or `duplicate_identity`.", body = crate::http_error::ErrorBody),
        (status = 502, description = "The box failed the rotation (`rotation_failed`).", body = crate::http_error::ErrorBody),
        (status = 503, description = "Its agent is not connected (`agent_offline`).", body = crate::http_error::ErrorBody),
        (status = 504, description = "Its agent did not answer in time (`agent_timeout`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn rotate(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(imei): ApiPath,
) -> Result<Json<Rotation>, ApiError> {
    let rotation = state.allocator.rotate(&imei).await?;
    info!(imei = %imei, changed = rotation.changed, by = %caller.name, "modem IP rotated");
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::IpRotated,
            format!("modem:{imei}"),
            json!({"old_ip": rotation.old_ip, "new_ip": rotation.new_ip,
               "changed": rotation.changed, "automatic": false}),
        )
        .await;
    Ok(Json(rotation))
}

/// `POST /v1/modems/{imei}/resolve` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The agent whose copy of the IMEI is the real modem.
    agent_id: String,
}

/// 200 `{"imei","owner","agent_ids"}`: `owner`'s copy is sold again, every other
/// reporter's never (until resolved again); 404 when no agent reports the IMEI; 422 when
/// `agent_id` does not. Stored, audited (`modem_identity_resolved`), and
/// `modem.identity_resolved` is emitted.
#[utoipa::path(post, operation_id = "resolve_modem", path = "/v1/modems/{imei}/resolve", tag = "modems",
    security(("admin" = [])), request_body = ResolveRequest,
    params(("imei" = String, Path, description = "The IMEI several agents report.")),
    responses(
        (status = 200, description = "`owner`'s copy is sold again.", body = Resolved),
        (status = 404, description = "No agent reports it (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn resolve(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(imei): ApiPath,
    ApiJson(body): ApiJson<ResolveRequest>,
) -> Result<Json<Resolved>, ApiError> {
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
    state.store.set_modem_owner(&imei, &body.agent_id).await?;
    state.fleet.set_owner(&imei, &body.agent_id);
    info!(imei = %imei, owner = %body.agent_id, by = %caller.name, "duplicate IMEI resolved");
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::ModemIdentityResolved,
            format!("modem:{imei}"),
            json!({"owner": body.agent_id, "agent_ids": holders}),
        )
        .await;
    let answer = Resolved {
        imei,
        owner: body.agent_id,
        agent_ids: holders,
    };
    let object = crate::events::to_object(&crate::events::IdentityEvent {
        imei: answer.imei.clone(),
        agent_ids: answer.agent_ids.clone(),
        owner: Some(answer.owner.clone()),
        live_allocations: None,
        resolved: true,
    });
    state
        .events
        .emit(EventType::ModemIdentityResolved, object)
        .await;
    Ok(Json(answer))
}

/// Who owns a duplicate IMEI now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resolved {
    imei: String,
    /// The agent whose copy is sold.
    owner: String,
    /// Every agent that reports it.
    agent_ids: Vec<String>,
}
