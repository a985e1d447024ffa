//! What a console user can do from a page: release an allocation, rotate a modem, revoke an
//! agent, name the owner of a duplicate IMEI. Each action is the REST API's own handler
//! called with the session's caller — the same checks, tenant scoping, answers and audit
//! entries as `DELETE /v1/allocations/{id}`, `POST /v1/modems/{imei}/rotate`,
//! `DELETE /v1/agents/{id}` and `POST /v1/modems/{imei}/resolve` — after the console's own:
//! a signed-in session, a request from this origin, and the session's CSRF token in the
//! `x-console-csrf` header (a page of another site can send neither; SameSite=Strict
//! already keeps the cookie off its requests). Roles as in the REST API: sellers have no
//! action; marketplaces release and rotate; only admins revoke and resolve.

use super::super::auth::{Admin, AnyRole, Caller};
use super::super::json::{ApiJson, ApiPath};
use super::super::{agents, allocations, modems, AppState};
use crate::http_error::ApiError;
use crate::store::Role;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-console-csrf";

/// An action's target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The allocation, modem (IMEI) or agent acted on.
    id: String,
    /// `resolve`: the agent whose copy of the IMEI is the real modem.
    agent_id: Option<String>,
}

/// `POST /console/actions/{action}` with `{"id": …}` (see the module docs).
pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    ApiJson(target): ApiJson<Target>,
) -> Response {
    let Some((_, session)) = super::signed_in(&state, &headers).await else {
        return ApiError::unauthorized().into_response();
    };
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    let token_ok = token.is_some_and(|t| same_secret(t, &session.csrf));
    if !super::same_origin(&headers) || !token_ok {
        return ApiError::forbidden().into_response();
    }
    let caller = session.caller;
    match (action.as_str(), caller.role) {
        (_, Role::Seller) => ApiError::forbidden().into_response(),
        ("release", _) => allocations::release(AnyRole(caller), State(state), ApiPath(target.id))
            .await
            .into_response(),
        ("rotate", _) => modems::rotate(AnyRole(caller), State(state), ApiPath(target.id))
            .await
            .into_response(),
        ("revoke", Role::Admin) => agents::revoke(Admin(caller), State(state), ApiPath(target.id))
            .await
            .into_response(),
        ("resolve", Role::Admin) => resolve(caller, state, target).await,
        ("revoke" | "resolve", _) => ApiError::forbidden().into_response(),
        _ => ApiError::not_found(format!("no console action {action:?}")).into_response(),
    }
}

async fn resolve(caller: Caller, state: AppState, target: Target) -> Response {
    let body = serde_json::json!({"agent_id": target.agent_id.unwrap_or_default()});
    let request = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(e) => return ApiError::invalid(e.to_string()).into_response(),
    };
    modems::resolve(
        Admin(caller),
        State(state),
        ApiPath(target.id),
        ApiJson(request),
    )
    .await
    .into_response()
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |diff, (x, y)| diff | (x ^ y))
            == 0
}
