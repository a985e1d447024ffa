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
    after: Option<String>,
    limit: Option<usize>,
}

/// One event as the API shows it.
#[derive(Debug, Serialize)]
struct EventView {
    cursor: String,
    at: String,
    actor: String,
    action: crate::store::AuditAction,
    target: String,
    details: Value,
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
    let page = state.store.audit_page(after, since, limit)?;
    // `null` at the end of the log; a client following new events keeps asking with the
    // last event's own `cursor`.
    let next_cursor = page
        .more
        .then(|| page.entries.last().map(|e| e.cursor.to_string()))
        .flatten();
    let events: Vec<EventView> = page.entries.into_iter().map(EventView::from).collect();
    Ok(Json(
        json!({ "events": events, "next_cursor": next_cursor }),
    ))
}
