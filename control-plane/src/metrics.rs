//! The control plane's Prometheus metrics (`GET /metrics`): counters recorded as things
//! happen — REST requests by matched route and status, commands by op and outcome, the
//! command round-trip histogram, webhook delivery attempts by event type and outcome, TLS
//! certificate reloads by result — and
//! gauges computed at scrape time from the fleet view and the store (agents, modems by
//! state, allocations by state, webhook deliveries pending).
//!
//! Labels come from fixed sets only: the route *pattern* axum matched (never the raw URL,
//! which holds ids), op names, error codes and event types (never an endpoint URL).

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::fleet::ModemFilter;
use crate::gateway::DispatchError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use farmhand_ops::metrics::{CounterVec, HistogramVec, Text, CONTENT_TYPE, LATENCY_BUCKETS_S};
use farmhand_protocol::Outcome;
use std::time::Duration;

/// The counters and histograms; gauges are computed in [`render`].
#[derive(Debug)]
pub struct PlaneMetrics {
    http_requests: CounterVec<3>,
    commands: CounterVec<2>,
    round_trip: HistogramVec,
    webhook_attempts: CounterVec<2>,
    /// Its reload counters, with `[tls]`.
    tls: Option<crate::tls::TlsReloader>,
}

impl Default for PlaneMetrics {
    fn default() -> Self {
        PlaneMetrics {
            http_requests: CounterVec::new(["method", "route", "status"]),
            commands: CounterVec::new(["op", "outcome"]),
            round_trip: HistogramVec::new("op", LATENCY_BUCKETS_S),
            webhook_attempts: CounterVec::new(["event", "outcome"]),
            tls: None,
        }
    }
}

impl PlaneMetrics {
    /// The metrics of a plane serving TLS through `tls` (`None`: plain HTTP).
    pub fn with_tls(tls: Option<crate::tls::TlsReloader>) -> Self {
        PlaneMetrics {
            tls,
            ..PlaneMetrics::default()
        }
    }

    /// Records a dispatched command's fate; answered commands also feed the round-trip
    /// histogram (send → result, including any redelivery after a reconnect).
    pub fn command_finished(
        &self,
        op: &str,
        result: &Result<Outcome, DispatchError>,
        elapsed: Duration,
    ) {
        let outcome = match result {
            Ok(Outcome::Ok { .. }) => "ok",
            Ok(Outcome::Error { error }) => error.code.as_str(),
            Err(DispatchError::AgentOffline) => "agent_offline",
            Err(DispatchError::Timeout) => "timeout",
            Err(DispatchError::SessionClosed) => "session_closed",
            Err(DispatchError::AgentRevoked) => "agent_revoked",
            Err(DispatchError::Storage) => "storage_error",
        };
        self.commands.inc([op, outcome]);
        if result.is_ok() {
            self.round_trip.observe(op, elapsed);
        }
    }

    /// How many commands of `op` ended with `outcome` (for tests).
    pub fn commands(&self, op: &str, outcome: &str) -> u64 {
        self.commands.get([op, outcome])
    }

    /// Records one webhook delivery attempt: `delivered` (2xx), `retry` (failed, will be
    /// retried) or `failed` (failed, given up).
    pub fn webhook_attempt(&self, event: &str, outcome: &str) {
        self.webhook_attempts.inc([event, outcome]);
    }
}

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
    state
        .metrics
        .http_requests
        .inc([method, &route, status.as_str()]);
    response
}

/// `GET /metrics`: the text exposition.
pub async fn render(state: &AppState) -> Result<Response, ApiError> {
    let mut text = Text::new();
    agent_gauges(&mut text, state)?;
    modem_gauges(&mut text, state);
    allocation_gauges(&mut text, state)?;
    let m = &state.metrics;
    text.counter_vec(
        "farmhand_http_requests_total",
        "REST requests by method, matched route and status.",
        &m.http_requests,
    );
    text.counter_vec(
        "farmhand_commands_total",
        "Commands sent to agents, by op and outcome (ok, an error code, timeout, agent_offline, session_closed, agent_revoked).",
        &m.commands,
    );
    text.histogram_vec(
        "farmhand_command_round_trip_seconds",
        "Time from sending a command to its result, answered commands only.",
        &m.round_trip,
    );
    text.counter_vec(
        "farmhand_webhook_deliveries_total",
        "Webhook delivery attempts by event type and outcome (delivered, retry, failed).",
        &m.webhook_attempts,
    );
    if let Some(tls) = &m.tls {
        text.counter_vec(
            "farmhand_tls_reloads_total",
            "TLS certificate reloads (SIGHUP) by result (ok, error: refused, the previous certificate is still served).",
            tls.reloads(),
        );
    }
    text.gauge(
        "farmhand_webhook_deliveries_pending",
        "Webhook deliveries not yet delivered nor given up.",
        state.store.pending_webhook_deliveries() as f64,
    );
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text.finish()).into_response())
}

fn agent_gauges(text: &mut Text, state: &AppState) -> Result<(), ApiError> {
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
    let enrolled = state.store.agents()?.len() as f64;
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
fn allocation_gauges(text: &mut Text, state: &AppState) -> Result<(), ApiError> {
    let series: Vec<([&str; 1], f64)> = state
        .store
        .allocation_counts()
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
