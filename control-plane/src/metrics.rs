//! The control plane's Prometheus counters, recorded as things happen: REST requests by
//! matched route and status, commands by op and outcome, the command round-trip histogram,
//! webhook delivery attempts by event type and outcome, TLS certificate reloads by result.
//! The layers that count things hold an `Arc<PlaneMetrics>`; `GET /metrics` (`api::metrics`)
//! writes these and adds the gauges it reads from the fleet view and the store.
//!
//! Labels come from fixed sets only: the route *pattern* axum matched (never the raw URL,
//! which holds ids), op names, error codes and event types (never an endpoint URL).

use farmhand_ops::metrics::{CounterVec, HistogramVec, Text, LATENCY_BUCKETS_S};
use std::time::Duration;

/// The counters and histograms; gauges are computed at scrape time (`api::metrics`).
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

    /// Records a dispatched command's fate (`outcome`: `ok`, an error code, or why nothing
    /// answered); answered commands also feed the round-trip histogram (send → result,
    /// including any redelivery after a reconnect).
    pub fn command_finished(&self, op: &str, outcome: &str, answered: bool, elapsed: Duration) {
        self.commands.inc([op, outcome]);
        if answered {
            self.round_trip.observe(op, elapsed);
        }
    }

    /// Counts one REST request (`method` and `route` from fixed sets: see `api::metrics`).
    pub fn http_request(&self, method: &str, route: &str, status: &str) {
        self.http_requests.inc([method, route, status]);
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

    /// Writes the counters and histograms in the text exposition.
    pub fn write(&self, text: &mut Text) {
        text.counter_vec(
            "farmhand_http_requests_total",
            "REST requests by method, matched route and status.",
            &self.http_requests,
        );
        text.counter_vec(
        "farmhand_commands_total",
        "Commands sent to agents, by op and outcome (ok, an error code, timeout, agent_offline, session_closed, agent_revoked).",
        &self.commands,
    );
        text.histogram_vec(
            "farmhand_command_round_trip_seconds",
            "Time from sending a command to its result, answered commands only.",
            &self.round_trip,
        );
        text.counter_vec(
            "farmhand_webhook_deliveries_total",
            "Webhook delivery attempts by event type and outcome (delivered, retry, failed).",
            &self.webhook_attempts,
        );
        if let Some(tls) = &self.tls {
            text.counter_vec(
            "farmhand_tls_reloads_total",
            "TLS certificate reloads (SIGHUP) by result (ok, error: refused, the previous certificate is still served).",
            tls.reloads(),
        );
        }
    }
}
