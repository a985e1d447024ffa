//! A seller's data (admin): export and erasure.
//!
//! `GET /v1/agents/{id}/export`: everything the plane holds about one seller's box,
//! as one JSON document — or, with `?part=NAME`, one of its tabular parts as CSV. The parts follow docs/privacy.md's data map (its "export" column names the part
//! each record kind lands in; a test checks every one appears). Buyer and marketplace data
//! stay out: an allocation shows what ran on the seller's box (modem, ports, times, terms,
//! usage), never the order id, the tenant or the buyer's login and password (audit entries
//! lose their `order_id` and `tenant` details). The export is audited (`seller_exported`).
//!
//! `POST /v1/agents/{id}/erase`: the agent is revoked (its session closed, no more
//! orders), its live allocations are ended as revocation ends them (`agent_revoked`; the
//! buyers' marketplaces get `allocation.released`), then the store erases everything about
//! it but the financial core of the allocations its box served, which now names a
//! tombstone id (`store::erase`). Audited as `seller_erased` on `agent:<tombstone>` with
//! counts only. 200 with the counts; 404 unknown; 409 while an allocation is still being
//! provisioned on it (it fails within the provisioning timeout: call again).

use super::auth::Admin;
use super::json::{ApiPath, ApiQuery};
use super::AppState;
use crate::fleet::ModemView;
use crate::http_error::ApiError;
use crate::ids::{random_id, rfc3339, unix_ms};
use crate::store::{AllocationRecord, AuditAction, Erased, SellerRecords};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::info;

/// The document's format name; a new one comes with any change that is not an addition.
pub const FORMAT: &str = "farmhand.seller-export.v1";

/// A tabular part of the document, for `?part=` (CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The box's modems.
    Modems,
    /// What ran on the box.
    Allocations,
    /// Traffic totals the box reported.
    Usage,
    /// Its modems' last rotations.
    Rotations,
    /// IMEIs it was named the owner of.
    ModemOwners,
    /// Commands waiting for it.
    PendingCommands,
    /// Audit entries about it.
    Audit,
    /// Probes of its ports, one row per result.
    Probes,
    /// Its quality counts, one row per hour.
    Quality,
    /// Its modems' traffic, one row per modem and day.
    UsageDays,
}

impl Part {
    /// Its key in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Modems => "modems",
            Part::Allocations => "allocations",
            Part::Usage => "usage",
            Part::Rotations => "rotations",
            Part::ModemOwners => "modem_owners",
            Part::PendingCommands => "pending_commands",
            Part::Audit => "audit",
            Part::Probes => "probes",
            Part::Quality => "quality",
            Part::UsageDays => "usage_days",
        }
    }
}

/// Audit details that belong to the marketplace, not the seller: left out of the export.
const MARKETPLACE_KEYS: [&str; 2] = ["order_id", "tenant"];

/// The query; unknown parameters are rejected.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// One tabular part as CSV instead of the whole document as JSON.
    #[param(inline)]
    part: Option<Part>,
}

/// The seller export document (`farmhand.seller-export.v1`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SellerExport {
    #[schema(example = "farmhand.seller-export.v1")]
    format: &'static str,
    #[schema(format = DateTime)]
    exported_at: String,
    /// `agent_id`, `label`, `hostname`, `public_key`, `enrolled_at`, `approved`, `revoked`.
    #[schema(value_type = Object)]
    agent: Value,
    modems: Vec<ModemView>,
    /// What ran on the box (no order id, tenant or buyer credentials).
    #[schema(value_type = Vec<Object>)]
    allocations: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    usage: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    rotations: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    modem_owners: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pending_commands: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    audit: Vec<Value>,
    /// Probes of its ports (`allocation_id`, `imei`, `at`, `ok`, `reason`, timings, the
    /// egress IP seen and the IP the modem reported).
    #[schema(value_type = Vec<Object>)]
    probes: Vec<Value>,
    /// Its quality counts per hour (`hour` is the hour's start; `latency`: the successful
    /// probes' first byte by bucket, 25 to 6400 ms and above).
    #[schema(value_type = Vec<Object>)]
    quality: Vec<Value>,
    /// Its modems' traffic per day (UTC): `day`, `imei`, `bytes_in`, `bytes_out`.
    #[schema(value_type = Vec<Object>)]
    usage_days: Vec<Value>,
}

/// What an erasure did: counts only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErasedView {
    #[serde(flatten)]
    erased: Erased,
    /// Live allocations ended first (`agent_revoked`).
    allocations_ended: usize,
}

/// 200 the document (JSON) or one part (CSV); 404 unknown agent; 422 a bad query.
#[utoipa::path(get, operation_id = "export_seller", path = "/v1/agents/{agent_id}/export", tag = "admin", security(("admin" = [])),
    params(("agent_id" = String, Path, description = "`ag_…`"), ExportQuery),
    responses(
        (status = 200, description = "Everything held about the seller's box.",
            content((SellerExport = "application/json"), (String = "text/csv"))),
        (status = 404, description = "No such agent (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn export(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let records = state
        .store
        .seller_records(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no agent {id:?}")))?;
    let document = document(&state, records);
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::SellerExported,
            format!("agent:{id}"),
            json!({"part": q.part.map(Part::as_str)}),
        )
        .await;
    let Some(part) = q.part.map(Part::as_str) else {
        return Ok(Json(document).into_response());
    };
    let value = serde_json::to_value(&document).map_err(|e| ApiError::internal(&e))?;
    let rows = value[part].as_array().cloned().unwrap_or_default();
    let disposition = format!("attachment; filename=\"{id}-{part}.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        super::csv::to_csv(&rows),
    )
        .into_response())
}

/// 200 `{"tombstone_id", counts…}`: the seller is erased (see the module docs).
#[utoipa::path(post, operation_id = "erase_seller", path = "/v1/agents/{agent_id}/erase", tag = "admin", security(("admin" = [])),
    params(("agent_id" = String, Path, description = "`ag_…`")),
    responses(
        (status = 200, description = "Erased; only the tombstoned financial core is left.", body = ErasedView),
        (status = 404, description = "No such agent (`not_found`).", body = crate::http_error::ErrorBody),
        (status = 409, description = "An allocation is still being provisioned on it (`invalid_state`, `Retry-After`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn erase(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<ErasedView>, ApiError> {
    if state.store.agent(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no agent {id:?}")));
    }
    // Revoked first, and durably: whatever happens next, the box gets no more orders.
    state.store.revoke_agent(&id).await?;
    state.gateway.kick(&id);
    state.fleet.forget(&id);
    let ended = state
        .allocator
        .end_for_erasure(&id, &caller.actor())
        .await?;
    let tombstone = random_id("erased");
    let erased = ErasedView {
        erased: state.store.erase_seller(&id, &tombstone).await?,
        allocations_ended: ended,
    };
    let details = serde_json::to_value(&erased).map_err(|e| ApiError::internal(&e))?;
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::SellerErased,
            format!("agent:{tombstone}"),
            details,
        )
        .await;
    info!(tombstone_id = %tombstone, by = %caller.name, "seller erased");
    Ok(Json(erased))
}

fn document(state: &AppState, records: SellerRecords) -> SellerExport {
    let agent = &records.agent;
    let agent_id = agent.agent_id.clone();
    SellerExport {
        format: FORMAT,
        exported_at: rfc3339(state.fleet.clock().now()),
        agent: json!({
            "agent_id": agent.agent_id,
            "label": agent.label,
            "hostname": agent.hostname,
            "public_key": base64_key(&agent.public_key),
            "enrolled_at": rfc3339(agent.enrolled_at),
            "approved": agent.approved,
            "revoked": agent.revoked,
        }),
        modems: state.fleet.agent_modems(&agent_id),
        allocations: records
            .allocations
            .iter()
            .map(|a| seller_allocation(a, &agent_id))
            .collect(),
        usage: records
            .usage
            .iter()
            .map(|(allocation_id, u)| {
                json!({
                    "allocation_id": allocation_id,
                    "bytes_in": u.bytes_in,
                    "bytes_out": u.bytes_out,
                    "measured_at_ms": u.measured_at_ms,
                })
            })
            .collect(),
        rotations: records
            .rotations
            .iter()
            .map(|(imei, r)| {
                json!({
                    "imei": imei,
                    "at_ms": r.at_ms,
                    "old_ip": r.old_ip,
                    "new_ip": r.new_ip,
                    "changed": r.changed,
                    "automatic": r.automatic,
                })
            })
            .collect(),
        modem_owners: records
            .modem_owners
            .iter()
            .map(|imei| json!({ "imei": imei }))
            .collect(),
        pending_commands: records
            .pending_commands
            .iter()
            .map(|c| {
                json!({
                    "command_id": c.command_id,
                    "op": c.body.op(),
                    "allocation_id": c.allocation_id(),
                    "deadline_ms": c.deadline_ms,
                })
            })
            .collect(),
        probes: records
            .probes
            .iter()
            .flat_map(|(allocation_id, track)| {
                track.results.iter().map(move |r| {
                    json!({
                        "allocation_id": allocation_id,
                        "imei": track.imei,
                        "at": rfc3339(r.at),
                        "ok": r.failure.is_none(),
                        "reason": r.failure,
                        "protocol": r.protocol,
                        "connect_ms": r.connect_ms,
                        "first_byte_ms": r.first_byte_ms,
                        "egress_ip": r.egress_ip,
                        "modem_ip": r.modem_ip,
                        "node": r.node,
                    })
                })
            })
            .collect(),
        quality: records
            .quality
            .iter()
            .map(|(_, hour, q)| {
                let start = time::OffsetDateTime::from_unix_timestamp(hour.saturating_mul(3600))
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                json!({
                    "hour": rfc3339(start),
                    "probes": q.probes,
                    "probes_ok": q.probes_ok,
                    "rotations": q.rotations,
                    "rotations_changed": q.rotations_changed,
                    "rotations_timed": q.rotations_timed,
                    "rotation_ms_total": q.rotation_ms_total,
                    "replacements": q.replacements,
                    "latency": q.latency,
                })
            })
            .collect(),
        usage_days: records
            .usage_days
            .iter()
            .map(|d| {
                let day = time::OffsetDateTime::from_unix_timestamp(d.day.saturating_mul(86_400))
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                    .date();
                json!({
                    "day": day.to_string(),
                    "imei": d.imei,
                    "bytes_in": d.bytes_in,
                    "bytes_out": d.bytes_out,
                })
            })
            .collect(),
        audit: records
            .audit
            .into_iter()
            .map(|e| {
                let mut details = e.event.details;
                if let Some(map) = details.as_object_mut() {
                    for key in MARKETPLACE_KEYS {
                        map.remove(key);
                    }
                }
                json!({
                    "at": rfc3339(e.event.at),
                    "actor": e.event.actor,
                    "action": e.event.action,
                    "target": e.event.target,
                    "details": details,
                })
            })
            .collect(),
    }
}

/// An allocation as its seller sees it: what ran on the box, no buyer or marketplace data.
fn seller_allocation(a: &AllocationRecord, agent_id: &str) -> Value {
    let on_this_box = a.agent_id == agent_id;
    json!({
        "allocation_id": a.allocation_id,
        "state": a.state,
        "on_this_box": on_this_box,
        "imei": a.imei,
        "carrier": a.carrier,
        "country": a.country,
        "host": a.host,
        "http_port": a.http_port,
        "socks_port": a.socks_port,
        "port_id": a.port_id,
        "created_at": rfc3339(a.created_at),
        "expires_at": rfc3339(a.expires_at),
        "released_at": a.released_at.map(rfc3339),
        "release_reason": a.release_reason,
        "duration_s": a.request.duration_s,
        "bandwidth_kbit": a.request.bandwidth_kbit,
        "traffic_quota_mb": a.request.traffic_quota_mb,
        "rotate_every_s": a.request.rotate_every_s,
        "replacements": a.replacements.iter().map(|r| json!({
            "at_ms": unix_ms(r.at),
            "reason": r.reason,
            "from_agent_id": r.from_agent_id,
            "from_imei": r.from_imei,
            "to_agent_id": r.to_agent_id,
            "to_imei": r.to_imei,
        })).collect::<Vec<_>>(),
        "detail_purged": a.detail_purged,
    })
}

fn base64_key(key: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}
