//! `GET /v1/audit?since=RFC3339&after=CURSOR&limit=N` (admin): the audit log, oldest
//! first, from `since` (default: the beginning) and after the entry `after` names — at
//! most `limit` events (default 100, at most 1000). Each event carries its `cursor`; the
//! answer's `next_cursor` is the last event's cursor while more events follow (`null` at
//! the end), so `?after=<next_cursor>` pages without repeats or gaps even when many events
//! share one instant, which paging by `since` cannot do.

use super::auth::Admin;
use super::json::ApiQuery;
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::rfc3339;
use crate::store::{AuditCursor, AuditEntry};
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Events returned when `limit` is omitted.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// Most events one request returns.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// The query; unknown parameters are rejected.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// RFC 3339, inclusive (write the offset as `Z` or `%2B`).
    #[param(format = DateTime)]
    since: Option<String>,
    /// A `cursor` from an earlier answer: the events after that one.
    #[param(pattern = "^[0-9a-f]{16}$")]
    after: Option<String>,
    /// Events per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// One event as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventView {
    /// Where it is in the log (opaque; page with `after`).
    cursor: String,
    #[schema(format = DateTime)]
    at: String,
    /// `key:…`, `agent:…`, `client:…` or `system`.
    actor: String,
    action: crate::store::AuditAction,
    /// What it was done to: `allocation:…`, `agent:…`, `modem:…`, `key:…`, `webhook:…`, …
    target: String,
    /// Ids, labels, codes and counts; never a secret.
    #[schema(value_type = Object)]
    details: Value,
}

/// One page of the log, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPageView {
    events: Vec<EventView>,
    /// The last event's cursor while more follow; `null` at the end.
    next_cursor: Option<String>,
}

impl From<AuditEntry> for EventView {
    fn from(AuditEntry { cursor, event: e }: AuditEntry) -> Self {
        EventView {
            cursor: cursor.to_string(),
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            details: e.details,
        }
    }
}

/// 200 `{"events":[{"cursor","at","actor","action","target","details"}],"next_cursor"}`;
/// 422 for a bad query.
#[utoipa::path(get, operation_id = "list_audit_events", path = "/v1/audit", tag = "admin", security(("admin" = [])),
    params(AuditQuery),
    responses((status = 200, description = "A page of the audit log.", body = AuditPageView)))]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPageView>, ApiError> {
    let since = match q.since.as_deref() {
        // An unencoded `+` in a query string arrives as a space: take it back.
        Some(text) => OffsetDateTime::parse(&text.replace(' ', "+"), &Rfc3339)
            .map_err(|_| ApiError::invalid("since must be an RFC 3339 time"))?,
        None => OffsetDateTime::UNIX_EPOCH,
    };
    let after = q
        .after
        .as_deref()
        .map(str::parse::<AuditCursor>)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("after: {e}")))?;
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_AUDIT_LIMIT}"
        )));
    }
    let page = state.store.audit_page(after, since, limit).await?;
    // `null` at the end of the log; a client following new events keeps asking with the
    // last event's own `cursor`.
    let next_cursor = page
        .more
        .then(|| page.entries.last().map(|e| e.cursor.to_string()))
        .flatten();
    let events: Vec<EventView> = page.entries.into_iter().map(EventView::from).collect();
    Ok(Json(AuditPageView {
        events,
        next_cursor,
    }))
}
