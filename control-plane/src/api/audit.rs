//! `GET /v1/audit?since=RFC3339&limit=N` (admin): the audit log, oldest first, from
//! `since` (default: the beginning) — at most `limit` events (default 100, at most 1000).
//! To page, ask again with `since` set to the last event's `at`; events sharing that
//! instant come again, so skip the ones already seen.

use super::auth::Admin;
use super::error::ApiError;
use super::json::ApiQuery;
use super::AppState;
use crate::ids::rfc3339;
use crate::store::AuditEvent;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Events returned when `limit` is omitted.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// Most events one request returns.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// The query; unknown parameters are rejected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    since: Option<String>,
    limit: Option<usize>,
}

/// One event as the API shows it.
#[derive(Debug, Serialize)]
struct EventView {
    at: String,
    actor: String,
    action: crate::store::AuditAction,
    target: String,
    details: Value,
}

impl From<AuditEvent> for EventView {
    fn from(e: AuditEvent) -> Self {
        EventView {
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            details: e.details,
        }
    }
}

/// 200 `{"events":[{"at","actor","action","target","details"}]}`; 422 for a bad query.
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = match q.since.as_deref() {
        // An unencoded `+` in a query string arrives as a space: take it back.
        Some(text) => OffsetDateTime::parse(&text.replace(' ', "+"), &Rfc3339)
            .map_err(|_| ApiError::invalid("since must be an RFC 3339 time"))?,
        None => OffsetDateTime::UNIX_EPOCH,
    };
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_AUDIT_LIMIT}"
        )));
    }
    let events: Vec<EventView> = state
        .store
        .audit_since(since, limit)?
        .into_iter()
        .map(EventView::from)
        .collect();
    Ok(Json(json!({ "events": events })))
}
