//! `/v1/allocations` — create (idempotent by order id), show, list (paged), renew, release,
//! replace, and the traffic `usage` agents report.
//!
//! **Tenants.** An allocation belongs to the tenant of the marketplace key that created it
//! (admins create in the default tenant). A marketplace key sees only its tenant's
//! allocations: another tenant's answer 404 as if they did not exist. Admins see every
//! tenant's.
//!
//! **Buyer credentials.** `login` and `password` are shown to the owning marketplace only;
//! admin keys see them as `null`. `replace` — which sends the buyer's password to another
//! agent — is the owning marketplace's alone: an admin gets 403 and the attempt is audited
//! (`privilege_refused`), so an admin key cannot move a buyer onto a box it enrolled.
//! After the retention period `password` is `null` for everyone and `credentials_purged`
//! is `true`; after the detail window `detail_purged` is `true` and `imei`/`login` are
//! empty, `host` and ports `null` (`[retention]`).

use super::auth::{AnyRole, Caller};
use super::json::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::allocator::{Created, ReleaseStatus};
use crate::http_error::ApiError;
use crate::ids::rfc3339;
use crate::store::{
    AllocationRecord, AllocationRequest, AllocationState, AuditAction, ReleaseReason, Replacement,
    Role, DEFAULT_TENANT,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The allocation object of the contract.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "allocation_id": "al_9f3c2a41d6b84e0f9a7c5e1b2d3f4a5b", "order_id": "shop-order-1234",
    "state": "active", "imei": "350000000000018", "agent_id": "ag_4b1e…", "carrier": "Vodafone",
    "country": "DE", "host": "203.0.113.7", "http_port": 8001, "socks_port": 5001,
    "login": "fh7d2k9q", "password": "s3cr3t-shown-to-its-marketplace-only",
    "credentials_purged": false, "detail_purged": false,
    "created_at": "2026-12-07T10:00:00Z", "expires_at": "2027-01-06T10:00:00Z",
    "released_at": null, "release_reason": null, "rotate_every_s": null,
    "bandwidth_kbit": null, "traffic_quota_mb": null, "box_rotation_s": 0,
    "replacements": [], "tenant": "default"
}))]
pub struct AllocationView {
    allocation_id: String,
    order_id: String,
    state: AllocationState,
    imei: String,
    agent_id: String,
    carrier: Option<String>,
    country: Option<String>,
    host: Option<String>,
    http_port: Option<u16>,
    socks_port: Option<u16>,
    login: Option<String>,
    password: Option<String>,
    credentials_purged: bool,
    /// The operational detail (modem, host, ports, login) was cleared at the end of its
    /// retention window; the financial core stays.
    detail_purged: bool,
    created_at: String,
    expires_at: String,
    released_at: Option<String>,
    release_reason: Option<ReleaseReason>,
    /// Automatic rotation interval asked for (`null`: none).
    rotate_every_s: Option<u64>,
    /// Speed limit, kbit/s each direction (`null`: none).
    bandwidth_kbit: Option<u64>,
    /// Traffic quota, MB (`null`: none).
    traffic_quota_mb: Option<u64>,
    /// The seller's BOX rotates this modem's IP by itself this often, seconds (its
    /// `AUTO_IP_ROTATION`; `null`: unknown or the modem is not reported now; 0: it does
    /// not): the buyer's IP may change that often whatever the order asked.
    box_rotation_s: Option<u64>,
    replacements: Vec<ReplacementView>,
    /// The marketplace tenant it belongs to.
    tenant: String,
}

/// One entry of the allocation's `replacements` history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplacementView {
    at: String,
    reason: crate::store::ReplacementReason,
    from_imei: String,
    from_agent_id: String,
    to_imei: String,
    to_agent_id: String,
}

impl From<Replacement> for ReplacementView {
    fn from(r: Replacement) -> Self {
        ReplacementView {
            at: rfc3339(r.at),
            reason: r.reason,
            from_imei: r.from_imei,
            from_agent_id: r.from_agent_id,
            to_imei: r.to_imei,
            to_agent_id: r.to_agent_id,
        }
    }
}

fn view(
    state: &AppState,
    caller: &Caller,
    record: AllocationRecord,
) -> Result<AllocationView, ApiError> {
    let (login, password) = if caller.tenant.as_ref() == Some(&record.tenant) {
        let password = state.allocator.password(&record)?;
        (
            Some(record.login.clone()),
            password.map(|p| p.expose().to_string()),
        )
    } else {
        (None, None)
    };
    let credentials_purged = record.password_sealed.is_none();
    let box_rotation_s = state.fleet.box_rotation_s(&record.agent_id, &record.imei);
    Ok(AllocationView {
        allocation_id: record.allocation_id,
        order_id: record.order_id,
        state: record.state,
        imei: record.imei,
        agent_id: record.agent_id,
        carrier: record.carrier,
        country: record.country,
        host: record.host,
        http_port: record.http_port,
        socks_port: record.socks_port,
        login,
        password,
        credentials_purged,
        detail_purged: record.detail_purged,
        created_at: rfc3339(record.created_at),
        expires_at: rfc3339(record.expires_at),
        released_at: record.released_at.map(rfc3339),
        release_reason: record.release_reason,
        rotate_every_s: record.request.rotate_every_s,
        bandwidth_kbit: record.request.bandwidth_kbit,
        traffic_quota_mb: record.request.traffic_quota_mb,
        box_rotation_s,
        replacements: record.replacements.into_iter().map(Into::into).collect(),
        tenant: record.tenant,
    })
}

/// The allocation `id` if `caller` may see it: 404 when it does not exist or belongs to
/// another tenant (told apart by nobody, so ids of other tenants cannot be probed).
pub(super) async fn owned(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<AllocationRecord, ApiError> {
    state
        .store
        .allocation(id)
        .await?
        .filter(|r| caller.tenant.as_ref().is_none_or(|t| *t == r.tenant))
        .ok_or_else(|| ApiError::not_found(format!("no allocation {id:?}")))
}

/// `POST /v1/allocations`: 201 new, 200 same order again; errors per the contract.
#[utoipa::path(post, operation_id = "create_allocation", path = "/v1/allocations", tag = "allocations", security(("admin" = []), ("marketplace" = [])),
    request_body = AllocationRequest,
    responses(
        (status = 201, description = "A new port, `active`: deliver it.", body = AllocationView),
        (status = 200, description = "This order id's allocation already (the same body again).", body = AllocationView),
        (status = 409, description = "`order_conflict` (the order id was used with another body) or `no_capacity` (nothing matching is free).", body = crate::http_error::ErrorBody),
        (status = 502, description = "The box failed the port (`provision_failed`); the attempt is `failed`, retry the order id.", body = crate::http_error::ErrorBody),
        (status = 503, description = "The chosen box went away (`agent_offline`); retry the order id.", body = crate::http_error::ErrorBody),
        (status = 504, description = "The box did not confirm in time (`agent_timeout`); retry the order id.", body = crate::http_error::ErrorBody),
    ))]
pub async fn create(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<AllocationRequest>,
) -> Result<(StatusCode, Json<AllocationView>), ApiError> {
    let tenant = caller
        .tenant
        .clone()
        .unwrap_or_else(|| DEFAULT_TENANT.into());
    let (created, record) = state
        .allocator
        .allocate(request, tenant, caller.actor())
        .await?;
    let status = if created == Created::New {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&state, &caller, record)?)))
}

/// `GET /v1/allocations/{id}`.
#[utoipa::path(get, operation_id = "get_allocation", path = "/v1/allocations/{allocation_id}", tag = "allocations", security(("admin" = []), ("marketplace" = [])), params(("allocation_id" = String, Path, description = "`al_…`")),
    responses(
        (status = 200, description = "The allocation.", body = AllocationView),
        (status = 404, description = "No such allocation for this key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn show(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<AllocationView>, ApiError> {
    let record = owned(&state, &caller, &id).await?;
    Ok(Json(view(&state, &caller, record)?))
}

/// `GET /v1/allocations/{id}/usage`: the traffic totals its agent(s) reported (monotonic;
/// zeros and `measured_at: null` before the first report); 404 for an unknown allocation.
#[utoipa::path(get, operation_id = "get_allocation_usage", path = "/v1/allocations/{allocation_id}/usage", tag = "allocations", security(("admin" = []), ("marketplace" = [])), params(("allocation_id" = String, Path, description = "`al_…`")),
    responses(
        (status = 200, description = "The traffic its box measured.", body = Usage),
        (status = 404, description = "No such allocation for this key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn usage(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<Usage>, ApiError> {
    owned(&state, &caller, &id).await?;
    let totals = state.store.usage(&id).await?;
    let measured_at = totals
        .and_then(|t| i128::from(t.measured_at_ms).checked_mul(1_000_000))
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .map(rfc3339);
    Ok(Json(Usage {
        allocation_id: id,
        bytes_in: totals.map_or(0, |t| t.bytes_in),
        bytes_out: totals.map_or(0, |t| t.bytes_out),
        measured_at,
    }))
}

/// An allocation's traffic, monotonic.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"allocation_id": "al_9f3c…", "bytes_in": 73400320,
    "bytes_out": 1048576, "measured_at": "2026-12-07T11:00:00Z"}))]
pub struct Usage {
    allocation_id: String,
    /// Bytes towards the buyer (downloads).
    bytes_in: u64,
    /// Bytes from the buyer (uploads).
    bytes_out: u64,
    /// When the box read its counters (RFC 3339); `null` before the first report.
    #[schema(format = DateTime)]
    measured_at: Option<String>,
}

/// One page of allocations, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllocationPageView {
    allocations: Vec<AllocationView>,
    /// Where the next page starts (`?after=`) while more may follow; `null` at the end.
    next_cursor: Option<String>,
}

/// Allocations one page holds when `limit` is omitted.
pub const DEFAULT_PAGE: usize = 100;
/// Most allocations one page holds.
pub const MAX_PAGE: usize = 1000;
/// Index entries one page may read per allocation it can hold: a filter that matches
/// little gives short pages (with a cursor), never a scan of the table.
const EXAMINE_PER_ITEM: usize = 10;

/// List filters and paging; unknown parameters are rejected.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The allocation of this order id (one lookup; no paging).
    order_id: Option<String>,
    /// Only allocations in this state.
    state: Option<AllocationState>,
    /// Admins: only this tenant's (marketplace keys always see only their own).
    tenant: Option<String>,
    /// A `next_cursor` from an earlier page.
    #[param(pattern = "^([0-9a-f]{2})*$")]
    after: Option<String>,
    /// Allocations per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /v1/allocations?order_id=&state=&after=&limit=`: oldest first, a page at a time
/// (`next_cursor` while more may follow; `null` at the end).
#[utoipa::path(get, operation_id = "list_allocations", path = "/v1/allocations", tag = "allocations", security(("admin" = []), ("marketplace" = [])), params(ListQuery),
    responses((status = 200, description = "A page of allocations, oldest first.", body = AllocationPageView)))]
pub async fn list(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<AllocationPageView>, ApiError> {
    let tenant = match (&caller.tenant, q.tenant) {
        (Some(own), Some(asked)) if *own != asked => return Err(ApiError::forbidden()),
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    // Checked whether or not it is used: a malformed cursor is a client bug to report.
    let cursor = q
        .after
        .as_deref()
        .map(|c| crate::ids::unhex(c).ok_or_else(|| ApiError::invalid("after: not a cursor")))
        .transpose()?;
    let (records, next_cursor) = match &q.order_id {
        // The order index: one lookup.
        Some(order_id) => {
            let tenant = tenant.as_deref().unwrap_or(DEFAULT_TENANT);
            let found = state.store.allocation_by_order(tenant, order_id).await?;
            let records = found
                .into_iter()
                .filter(|a| q.state.is_none_or(|s| s == a.state))
                .collect();
            (records, None)
        }
        None => {
            let page = state
                .store
                .allocations_page(
                    tenant.as_deref(),
                    cursor.as_deref(),
                    limit,
                    limit * EXAMINE_PER_ITEM,
                    |a| q.state.is_none_or(|s| s == a.state),
                )
                .await?;
            (page.records, page.next_cursor)
        }
    };
    let views = records
        .into_iter()
        .map(|r| view(&state, &caller, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(AllocationPageView {
        allocations: views,
        next_cursor,
    }))
}

/// The renew body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Seconds to add to `expires_at`.
    #[schema(minimum = 60, maximum = 31_536_000, example = 2_592_000)]
    duration_s: u64,
}

/// `POST /v1/allocations/{id}/renew`: 200 with the later `expires_at`.
#[utoipa::path(post, operation_id = "renew_allocation", path = "/v1/allocations/{allocation_id}/renew", tag = "allocations", security(("admin" = []), ("marketplace" = [])), params(("allocation_id" = String, Path, description = "`al_…`")),
    request_body = RenewRequest,
    responses(
        (status = 200, description = "Renewed: the later `expires_at`.", body = AllocationView),
        (status = 404, description = "No such allocation for this key (`not_found`).", body = crate::http_error::ErrorBody),
        (status = 409, description = "It is not live (`invalid_state`).", body = crate::http_error::ErrorBody),
        (status = 502, description = "The box refused the new expiry.", body = crate::http_error::ErrorBody),
        (status = 504, description = "The box did not answer in time (`agent_timeout`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn renew(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<RenewRequest>,
) -> Result<Json<AllocationView>, ApiError> {
    owned(&state, &caller, &id).await?;
    let record = state.allocator.renew(&id, body.duration_s).await?;
    Ok(Json(view(&state, &caller, record)?))
}

/// `POST /v1/allocations/{id}/replace`: 200 with the allocation moved to another modem
/// (state `replaced`); 409 `no_capacity` / `invalid_state`; as provisioning otherwise. The
/// owning marketplace only (403 for admins, audited).
#[utoipa::path(post, operation_id = "replace_allocation", path = "/v1/allocations/{allocation_id}/replace", tag = "allocations",
    security(("marketplace" = [])), params(("allocation_id" = String, Path, description = "`al_…`")),
    responses(
        (status = 200, description = "Moved to another modem, same credentials (`replaced`).", body = AllocationView),
        (status = 404, description = "No such allocation for this key (`not_found`).", body = crate::http_error::ErrorBody),
        (status = 409, description = "`no_capacity` or `invalid_state`.", body = crate::http_error::ErrorBody),
        (status = 502, description = "The new box failed the port (`provision_failed`).", body = crate::http_error::ErrorBody),
        (status = 504, description = "The new box did not confirm in time (`agent_timeout`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn replace(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<AllocationView>, ApiError> {
    if caller.role != Role::Marketplace {
        tracing::warn!(by = %caller.name, allocation_id = %id, "an admin key tried to move a buyer's allocation: refused");
        state
            .store
            .audit(
                caller.actor(),
                AuditAction::PrivilegeRefused,
                format!("allocation:{id}"),
                json!({"call": "replace", "why": "sends the buyer's password to another agent"}),
            )
            .await;
        return Err(ApiError::forbidden());
    }
    owned(&state, &caller, &id).await?;
    let record = state.allocator.replace(&id, caller.actor()).await?;
    Ok(Json(view(&state, &caller, record)?))
}

/// `DELETE /v1/allocations/{id}`: 200 `released`, 202 `releasing` while the agent is away.
#[utoipa::path(delete, operation_id = "release_allocation", path = "/v1/allocations/{allocation_id}", tag = "allocations", security(("admin" = []), ("marketplace" = [])), params(("allocation_id" = String, Path, description = "`al_…`")),
    responses(
        (status = 200, description = "Released: the port is gone.", body = AllocationView),
        (status = 202, description = "`releasing`: the box is away; it goes when it is back.", body = AllocationView),
        (status = 404, description = "No such allocation for this key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn release(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<(StatusCode, Json<AllocationView>), ApiError> {
    owned(&state, &caller, &id).await?;
    let (status, record) = state.allocator.release(&id, caller.actor()).await?;
    let code = if status == ReleaseStatus::Done {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(view(&state, &caller, record)?)))
}
