//! `GET /v1/agents`, `GET /v1/agents/{id}`, `DELETE /v1/agents/{id}` (admin): the enrolled
//! agents merged with their live state, and revocation (which closes the live session at
//! once, refuses every later connection with that key and releases the agent's
//! allocations: `agent_revoked`). `POST /v1/agents/{id}/approve` lets an agent enrolled
//! under `[enroll] require_approval` get orders (audited).

use super::auth::Admin;
use super::json::ApiPath;
use super::AppState;
use crate::fleet::ModemView;
use crate::http_error::ApiError;
use crate::ids::rfc3339;
use crate::store::{AgentRecord, AuditAction};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::json;
use tracing::info;

/// One agent as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    agent_id: String,
    label: String,
    hostname: String,
    connected: bool,
    /// The control-plane node holding its session, in a cluster on PostgreSQL (`null` on
    /// a single node, and while it is disconnected).
    node: Option<String>,
    last_seen: Option<String>,
    /// When its current session opened (while disconnected: when its last one did;
    /// `null` if none opened since this node started).
    connected_since: Option<String>,
    agent_version: Option<String>,
    /// The agent ↔ control-plane protocol version its session speaks.
    protocol_version: Option<u32>,
    /// The agent's modems (last known state while it is disconnected).
    modems: Vec<ModemView>,
    public_host: Option<String>,
    country: Option<String>,
    proxysmart_reachable: bool,
    /// What the box was seen to keep (`null` = not known yet): orders that need a limit
    /// the box drops are placed elsewhere.
    #[schema(value_type = Object)]
    capabilities: farmhand_protocol::BoxCapabilities,
    /// The box's own health as last reported (`null` before the first report).
    #[schema(value_type = Option<Object>)]
    health: Option<farmhand_protocol::HostHealth>,
    /// Why the box gets no new orders now, if it does not: a resource past its limit.
    held_back: Vec<HeldBack>,
    enrolled_at: String,
    revoked: bool,
    /// False while held for an admin's approval (no orders until then).
    approved: bool,
}

/// `{"agents": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentList {
    agents: Vec<AgentView>,
}

/// One reason a box gets no new orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeldBack {
    resource: &'static str,
    reason: String,
}

pub(super) fn view(state: &AppState, record: AgentRecord) -> AgentView {
    let live = state.fleet.agent(&record.agent_id).unwrap_or_default();
    // This agent's modems only: listing every modem of the fleet per agent made
    // `GET /v1/agents` quadratic (10,000 agents × 80,000 modems).
    let modems = state.fleet.agent_modems(&record.agent_id);
    let site = live.site.as_ref();
    let here = state.gateway.is_connected(&record.agent_id);
    let node = match &live.node {
        Some(elsewhere) => Some(elsewhere.clone()),
        None if here && state.store.is_shared() => Some(state.gateway.node_id().to_string()),
        None => None,
    };
    AgentView {
        connected: live.connected && (here || live.node.is_some()),
        node,
        last_seen: live.last_seen.map(rfc3339),
        connected_since: live.connected_since.map(rfc3339),
        agent_version: live.agent_version.clone(),
        protocol_version: live.protocol,
        modems,
        public_host: site.map(|s| s.public_host.clone()),
        country: site.map(|s| s.country.clone()),
        proxysmart_reachable: live.proxysmart_reachable,
        capabilities: live.capabilities.clone(),
        health: live.health.clone(),
        held_back: live
            .held_back
            .iter()
            .map(|(resource, reason)| HeldBack {
                resource: resource.as_str(),
                reason: reason.clone(),
            })
            .collect(),
        enrolled_at: rfc3339(record.enrolled_at),
        revoked: record.revoked,
        approved: record.approved,
        agent_id: record.agent_id,
        label: record.label,
        hostname: record.hostname,
    }
}

/// 200 `{"agents":[...]}`.
#[utoipa::path(get, operation_id = "list_agents", path = "/v1/agents", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Every enrolled agent with its live state.", body = AgentList)))]
pub async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<AgentList>, ApiError> {
    let agents = state
        .store
        .agents()
        .await?
        .into_iter()
        .map(|a| view(&state, a))
        .collect();
    Ok(Json(AgentList { agents }))
}

/// 200 with one agent and its modems; 404 when unknown.
#[utoipa::path(get, operation_id = "get_agent", path = "/v1/agents/{agent_id}", tag = "admin", security(("admin" = [])),
    params(("agent_id" = String, Path, description = "`ag_…`")),
    responses(
        (status = 200, description = "The agent and its modems.", body = AgentView),
        (status = 404, description = "No such agent (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn show(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<AgentView>, ApiError> {
    let record = state
        .store
        .agent(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no agent {id:?}")))?;
    Ok(Json(view(&state, record)))
}

/// 200 with the agent, which may get orders from now on; 404 unknown. Audited once.
#[utoipa::path(post, operation_id = "approve_agent", path = "/v1/agents/{agent_id}/approve", tag = "admin",
    security(("admin" = [])), params(("agent_id" = String, Path, description = "`ag_…`")),
    responses(
        (status = 200, description = "Approved: it may get orders.", body = AgentView),
        (status = 404, description = "No such agent (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn approve(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<AgentView>, ApiError> {
    let Some(was_held) = state.store.approve_agent(&id).await? else {
        return Err(ApiError::not_found(format!("no agent {id:?}")));
    };
    state.fleet.set_awaiting_approval(&id, false);
    if was_held {
        info!(agent_id = %id, by = %caller.name, "agent approved for orders");
        state
            .store
            .audit(
                caller.actor(),
                AuditAction::AgentApproved,
                format!("agent:{id}"),
                json!({}),
            )
            .await;
    }
    let record = state
        .store
        .agent(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no agent {id:?}")))?;
    Ok(Json(view(&state, record)))
}

/// 204: revoked, and its live session (if any) closed now.
#[utoipa::path(delete, operation_id = "revoke_agent", path = "/v1/agents/{agent_id}", tag = "admin", security(("admin" = [])),
    params(("agent_id" = String, Path, description = "`ag_…`")),
    responses(
        (status = 204, description = "Revoked; its allocations end right after (`agent_revoked`)."),
        (status = 404, description = "No such agent (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn revoke(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    if !state.store.revoke_agent(&id).await? {
        return Err(ApiError::not_found(format!("no agent {id:?}")));
    }
    // Recorded before the kick, so the log reads "revoked" before "disconnected".
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::AgentRevoked,
            format!("agent:{id}"),
            json!({"was_connected": state.gateway.is_connected(&id)}),
        )
        .await;
    let kicked = state.gateway.kick(&id);
    state.fleet.forget(&id);
    info!(agent_id = %id, by = %caller.name, kicked, "agent revoked");
    // Its waiting commands fail and its outbox is emptied (flushed) before the 204; its
    // allocations end in the background, one with a command in flight once that command
    // has failed. After a storage failure here (500) a repeated DELETE, or the next start,
    // does it (`allocator::revoked`).
    state.allocator.agent_revoked(&id, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
