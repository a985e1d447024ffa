//! `GET /metrics`: the counters of [`PlaneMetrics`](crate::metrics::PlaneMetrics) and the
//! gauges read at scrape time from the fleet view and the store (agents, modems by state,
//! allocations by state, webhook deliveries pending), and the middleware that counts every
//! REST request. Each gauge costs the same however many records were ever stored.

use super::AppState;
use crate::fleet::ModemFilter;
use crate::http_error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use farmhand_ops::metrics::{Text, CONTENT_TYPE};

/// The methods the API has, as labels; any other (clients may send any token) is `other`,
/// so request data never makes a new series.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

fn method_label(method: &axum::http::Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// Middleware: counts every request by method, matched route and status.
pub async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let status = response.status();
    state.metrics.http_request(method, &route, status.as_str());
    response
}

/// `GET /metrics`: the text exposition.
pub async fn render(state: &AppState) -> Result<Response, ApiError> {
    let mut text = Text::new();
    agent_gauges(&mut text, state).await?;
    modem_gauges(&mut text, state);
    allocation_gauges(&mut text, state).await?;
    state.metrics.write(&mut text);
    let in_flight: Vec<([&str; 1], f64)> = state
        .gateway
        .commands_in_flight()
        .by_op
        .into_iter()
        .map(|(op, n)| ([op], n as f64))
        .collect();
    text.gauge_vec(
        "farmhand_commands_in_flight",
        "Commands this node sent that await their result, by op.",
        ["op"],
        &in_flight,
    );
    text.gauge(
        "farmhand_webhook_deliveries_pending",
        "Webhook deliveries not yet delivered nor given up.",
        state.store.pending_webhook_deliveries().await? as f64,
    );
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text.finish()).into_response())
}

async fn agent_gauges(text: &mut Text, state: &AppState) -> Result<(), ApiError> {
    let connected = state.fleet.connected_count() as f64;
    text.gauge(
        "farmhand_agents_connected",
        "Agents with a live session.",
        connected,
    );
    let held: Vec<([&str; 1], f64)> = state
        .fleet
        .held_back_counts()
        .iter()
        .map(|(resource, n)| ([resource.as_str()], *n as f64))
        .collect();
    text.gauge_vec(
        "farmhand_agents_held_back",
        "Connected agents whose box is past a health limit (no new allocations there), by resource.",
        ["resource"],
        &held,
    );
    let enrolled = state.store.agents().await?.len() as f64;
    text.gauge(
        "farmhand_agents_enrolled",
        "Enrolled agents, revoked included.",
        enrolled,
    );
    Ok(())
}

fn modem_gauges(text: &mut Text, state: &AppState) {
    let modems = state.fleet.modems(&ModemFilter::default());
    let count = |f: &dyn Fn(&crate::fleet::ModemView) -> bool| {
        modems.iter().filter(|m| f(m)).count() as f64
    };
    let available = count(&|m| m.available);
    text.gauge(
        "farmhand_modems_known",
        "Modems reported by connected agents.",
        modems.len() as f64,
    );
    text.gauge(
        "farmhand_modems_available",
        "Modems that can take a new allocation.",
        available,
    );
    text.gauge_vec(
        "farmhand_modems",
        "Modems by state: available, busy (online, no free capacity) or offline.",
        ["state"],
        &[
            (["available"], available),
            (["busy"], count(&|m| m.online && !m.available)),
            (["offline"], count(&|m| !m.online)),
        ],
    );
}

/// Counted as allocations change state (`Store::allocation_counts`): a scrape costs the
/// same however many allocations were ever stored.
async fn allocation_gauges(text: &mut Text, state: &AppState) -> Result<(), ApiError> {
    let series: Vec<([&str; 1], f64)> = state
        .store
        .allocation_counts()
        .await?
        .into_iter()
        .map(|(s, n)| ([s.as_str()], n as f64))
        .collect();
    text.gauge_vec(
        "farmhand_allocations",
        "Allocations by state.",
        ["state"],
        &series,
    );
    Ok(())
}
