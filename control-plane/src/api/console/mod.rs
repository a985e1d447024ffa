//! The operator console under `/console/`: server-rendered pages (fleet, allocations,
//! health) whose tables one small script (`console/console.js`, built into the binary:
//! nothing is loaded from elsewhere, no Node is needed to build) fills from a live
//! Server-Sent Events stream (`/console/events`, a snapshot at each change, at most one a
//! second — the page never polls). Sign-in exchanges an API key for a session cookie
//! (`session`); admin keys see everything, marketplace keys their tenant's allocations
//! and the modems, never the admin pages, seller keys their own boxes only (every other
//! page and stream refused by the server, not only hidden).
//! Every answer carries a strict Content-Security-Policy (no inline script or style, no
//! other origin, no framing). Actions (`actions`) are the REST API's handlers, called with
//! the session's caller after a same-origin and CSRF-token check.

mod actions;
mod pages;
pub mod session;
mod snapshot;
pub mod trend;

use super::auth::{check_budget, note_failure};
use super::json::{ApiPath, ApiQuery};
use super::AppState;
use crate::ratelimit::ClientAddr;
use crate::store::Role;
use axum::extract::State;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, LOCATION,
    ORIGIN, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures_util::stream::Stream;
use serde::Deserialize;
use session::Session;
use snapshot::View;
use std::convert::Infallible;
use std::time::Duration;

/// What every console answer may load: itself, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// How often a page's stream looks for changes.
const TICK: Duration = Duration::from_secs(1);

const SCRIPT: &str = include_str!("../../../../console/console.js");
const STYLE: &str = include_str!("../../../../console/console.css");
const ICON: &str = include_str!("../../../../console/favicon.svg");

/// The console's routes (merged into the REST app).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/fleet", get(|s, h| page(s, h, pages::Page::Fleet)))
        .route(
            "/console/allocations",
            get(|s, h| page(s, h, pages::Page::Allocations)),
        )
        .route(
            "/console/health",
            get(|s, h| page(s, h, pages::Page::Health)),
        )
        .route("/console/boxes", get(|s, h| page(s, h, pages::Page::Boxes)))
        .route("/console/usage.csv", get(usage_csv))
        .route("/console/actions/{action}", post(actions::act))
        .route("/console/allocations/{allocation_id}", get(allocation_page))
        .route("/console/modems/{imei}", get(modem_page))
        .route("/console/events", get(events))
        .route(
            "/console/assets/console.js",
            get(|| async { asset(SCRIPT, "text/javascript") }),
        )
        .route(
            "/console/assets/console.css",
            get(|| async { asset(STYLE, "text/css") }),
        )
        .route(
            "/console/assets/favicon.svg",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
        .layer(axum::middleware::map_response(secure_headers))
}

/// The headers every console answer carries.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it the browser sends `Origin: null` on the page's own forms.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [(CONTENT_TYPE, kind), (CACHE_CONTROL, "public, max-age=300")],
        body,
    )
        .into_response()
}

/// The session the request carries, if its key still exists.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let (id, session) = state.console.of(headers)?;
    still_open(state, &id, &session)
        .await
        .then_some((id, session))
}

/// Whether session `id` is open and its key still exists: a revoked key's sessions end
/// here. A store that cannot answer ends nothing (the stream says its data is stale).
async fn still_open(state: &AppState, id: &str, session: &Session) -> bool {
    let revoked = match session.caller.key_id.as_deref() {
        Some(key_id) => matches!(state.store.api_key_exists(key_id).await, Ok(false)),
        None => true,
    };
    if revoked {
        state.console.close(id);
    }
    !revoked && state.console.is_open(id)
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Some((_, session)) => {
            let to = pages::Page::home(session.caller.role).path();
            (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
        }
        None => see_other("/console/login"),
    }
}

async fn login_page() -> Response {
    pages::login(None).into_response()
}

#[derive(Deserialize)]
struct Credentials {
    key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { key: <redacted> }")
    }
}

/// `POST /console/login`: a valid key opens a session (from a page
/// of this origin only: another site cannot sign a browser in with its own key).
async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
    }
    if check_budget(&state, client).is_err() {
        let why = "Too many wrong keys from this address: wait a minute and try again.";
        return (StatusCode::TOO_MANY_REQUESTS, pages::login(Some(why))).into_response();
    }
    let found = match state
        .store
        .find_api_key(form.key.trim(), crate::ids::now())
        .await
    {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in: cannot read the keys");
            let why = "The control plane cannot read its keys right now: try again shortly.";
            return (StatusCode::SERVICE_UNAVAILABLE, pages::login(Some(why))).into_response();
        }
    };
    let Some(found) = found else {
        note_failure(&state, client, "console").await;
        let why = "That key is not valid: it may be mistyped, revoked or expired. \
                   Ask your operator for an admin, marketplace or seller key.";
        return (StatusCode::UNAUTHORIZED, pages::login(Some(why))).into_response();
    };
    let caller = super::auth::Caller {
        role: found.record.role,
        tenant: found.record.tenant().map(str::to_owned),
        seller: found.record.seller().map(str::to_owned),
        name: found.record.name.clone(),
        key_id: Some(found.key_id.clone()),
    };
    tracing::info!(role = caller.role.as_str(), key = %caller.name, "console sign-in");
    let key_left = found.record.expires_at.map(|at| {
        let left = at - crate::ids::now();
        left.try_into().unwrap_or(Duration::ZERO)
    });
    let home = pages::Page::home(caller.role).path();
    let id = state.console.open(caller, key_left);
    let cookie = session::set_cookie(&id, state.config.tls.is_some());
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, home), (SET_COOKIE, cookie)],
    )
        .into_response()
}

/// `POST /console/logout` (from this origin only).
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
    }
    if let Some((id, _)) = state.console.of(&headers) {
        state.console.close(&id);
    }
    let cookie = session::clear_cookie(state.config.tls.is_some());
    (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, "/console/login".to_string()),
            (SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// A write must come from a page of this origin: `Origin`, when the browser sends it,
/// names the host the request was sent to (SameSite=Strict already keeps the cookie off
/// other sites' requests).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    host.is_some() && origin_host == host
}

async fn page(State(state): State<AppState>, headers: HeaderMap, page: pages::Page) -> Response {
    let Some((_, session)) = signed_in(&state, &headers).await else {
        return see_other("/console/login");
    };
    if !page.allowed(session.caller.role) {
        return (StatusCode::FORBIDDEN, pages::forbidden(&session)).into_response();
    }
    pages::page(page, &session).into_response()
}

/// `GET /console/usage.csv`: a seller session's modems' traffic per day, the last 31 days
/// (`GET /v1/seller/usage?format=csv` with a key gives any span).
async fn usage_csv(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((_, session)) = signed_in(&state, &headers).await else {
        return see_other("/console/login");
    };
    let Some(seller) = session.caller.seller.as_deref() else {
        return (StatusCode::FORBIDDEN, pages::forbidden(&session)).into_response();
    };
    let today = crate::api::seller::today(&state);
    let days = match super::seller::usage_of(&state, seller, today - 30, today).await {
        Ok(days) => days,
        Err(e) => {
            tracing::warn!(error = %e, "console: cannot read the usage days");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let rows: Vec<serde_json::Value> = days
        .iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect();
    (
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (CONTENT_DISPOSITION, "attachment; filename=\"usage.csv\""),
        ],
        super::csv::to_csv_in(&super::seller::USAGE_COLUMNS, &rows),
    )
        .into_response()
}

/// `GET /console/allocations/{id}`: one allocation and its timeline (404 when the
/// session may not see it, as in the REST API).
async fn allocation_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath,
) -> Response {
    let Some((_, session)) = signed_in(&state, &headers).await else {
        return see_other("/console/login");
    };
    if session.caller.role == Role::Seller {
        return (StatusCode::FORBIDDEN, pages::forbidden(&session)).into_response();
    }
    match snapshot::owned(&state, &session, &id).await {
        Ok(Some(_)) => pages::allocation(&session, &id).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            pages::not_found(&session, "allocation"),
        )
            .into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// `GET /console/modems/{imei}`: one modem (every agent's copy of the IMEI).
async fn modem_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(imei): ApiPath,
) -> Response {
    let Some((_, session)) = signed_in(&state, &headers).await else {
        return see_other("/console/login");
    };
    if session.caller.role == Role::Seller {
        return (StatusCode::FORBIDDEN, pages::forbidden(&session)).into_response();
    }
    if !farmhand_protocol::is_imei(&imei) || state.fleet.holders(&imei).is_empty() {
        return (StatusCode::NOT_FOUND, pages::not_found(&session, "modem")).into_response();
    }
    pages::modem(&session, &imei).into_response()
}

/// `?page=fleet|allocations|health|boxes`, or `?page=allocation|modem&id=…`: what the
/// stream feeds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    page: String,
    id: Option<String>,
}

impl EventsQuery {
    fn view(self) -> Option<View> {
        Some(match (self.page.as_str(), self.id) {
            ("fleet", None) => View::Fleet,
            ("allocations", None) => View::Allocations,
            ("health", None) => View::Health,
            ("boxes", None) => View::Boxes,
            ("allocation", Some(id)) if id.len() <= 64 => View::Allocation(id),
            ("modem", Some(imei)) if farmhand_protocol::is_imei(&imei) => View::Modem(imei),
            _ => return None,
        })
    }
}

/// `GET /console/events`: the page's snapshot now and after every change.
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Response {
    let Some((id, session)) = signed_in(&state, &headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(view) = q.view() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "no such console page").into_response();
    };
    if !view.allowed(session.caller.role) {
        return (StatusCode::FORBIDDEN, "this page is not open to this key").into_response();
    }
    let Some(slot) = state.console.stream(&id) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many live pages open for this session",
        )
            .into_response();
    };
    Sse::new(stream(state, id, session, view, slot))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Snapshots while the session lasts; a signed-out or revoked session ends the stream
/// with a `signed_out` event.
fn stream(
    state: AppState,
    id: String,
    session: Session,
    view: View,
    slot: session::StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Step {
        /// Held while the stream lives.
        _slot: session::StreamSlot,
        state: AppState,
        id: String,
        session: Session,
        view: View,
        memory: snapshot::Memory,
        last: String,
        first: bool,
        done: bool,
    }
    let start = Step {
        _slot: slot,
        state,
        id,
        session,
        view,
        memory: snapshot::Memory::default(),
        last: String::new(),
        first: true,
        done: false,
    };
    futures_util::stream::unfold(start, |mut step| async move {
        if step.done {
            return None;
        }
        loop {
            if !std::mem::take(&mut step.first) {
                tokio::time::sleep(TICK).await;
            }
            if !still_open(&step.state, &step.id, &step.session).await {
                step.done = true;
                return Some((Ok(Event::default().event("signed_out").data("{}")), step));
            }
            let (state, session, view) = (&step.state, &step.session, &step.view);
            let taken = snapshot::take(state, session, &mut step.memory, view).await;
            let Ok(snapshot) = taken else {
                // The store is away: the page keeps what it shows and says it is stale.
                return Some((Ok(Event::default().event("stale").data("{}")), step));
            };
            let json = serde_json::to_string(&snapshot).unwrap_or_default();
            if json != step.last {
                step.last = json.clone();
                return Some((Ok(Event::default().event("snapshot").data(json)), step));
            }
        }
    })
}
