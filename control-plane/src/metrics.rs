//! The control plane's Prometheus counters, recorded as things happen: REST requests by
//! matched route and status, commands by op and outcome, the command round-trip histogram,
//! webhook delivery attempts by event type and outcome, TLS certificate reloads by result.
//! The layers that count things hold an `Arc<PlaneMetrics>`; `GET /metrics` (`api::metrics`)
//! writes these and adds the gauges it reads from the fleet view and the store.
//!
//! Labels come from fixed sets only: the route *pattern* axum matched (never the raw URL,
//! which holds ids), op names, error codes and event types (never an endpoint URL).

use farmhand_ops::metrics::{Counter, CounterVec, HistogramVec, Text, LATENCY_BUCKETS_S};
use std::time::Duration;

/// The counters and histograms; gauges are computed at scrape time (`api::metrics`).
#[derive(Debug)]
pub struct PlaneMetrics {
    http_requests: CounterVec<3>,
    commands: CounterVec<2>,
    round_trip: HistogramVec,
    webhook_attempts: CounterVec<2>,
    probes: CounterVec<1>,
    probe_latency: HistogramVec,
    /// Probes cannot reach their target from the plane itself: no port is judged.
    probe_paused: std::sync::atomic::AtomicBool,
    /// Requests the probe echo endpoint answered.
    echo_requests: Counter,
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
            probes: CounterVec::new(["outcome"]),
            probe_latency: HistogramVec::new("protocol", LATENCY_BUCKETS_S),
            probe_paused: std::sync::atomic::AtomicBool::new(false),
            echo_requests: Counter::default(),
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

    /// Commands by op: how many were answered and their mean round trip (the console's
    /// health page).
    pub fn command_latencies(&self) -> Vec<(String, u64, Duration)> {
        self.round_trip
            .snapshot()
            .into_iter()
            .map(|(op, h)| {
                let n = h.count();
                let mean = Duration::from_secs_f64(h.sum_seconds() / n.max(1) as f64);
                (op, n, mean)
            })
            .collect()
    }

    /// REST requests answered 429 (`rate_limited`) since start.
    pub fn refusals(&self) -> u64 {
        self.http_requests
            .snapshot()
            .into_iter()
            .filter(|(labels, _)| labels[2] == "429")
            .map(|(_, n)| n)
            .sum()
    }

    /// Counts one finished probe: `ok` or its failure (`probe::Failure`).
    pub fn probe_finished(&self, outcome: &str) {
        self.probes.inc([outcome]);
    }

    /// How many probes ended with `outcome` (for tests).
    pub fn probes(&self, outcome: &str) -> u64 {
        self.probes.get([outcome])
    }

    /// Records the first-byte time of a probe's fetch through `protocol`.
    pub fn probe_latency(&self, protocol: &str, first_byte: Duration) {
        self.probe_latency.observe(protocol, first_byte);
    }

    /// Sets whether probe judging is paused; returns what it was.
    pub fn set_probe_judging_paused(&self, paused: bool) -> bool {
        self.probe_paused
            .swap(paused, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether probe judging is paused (the plane cannot reach its probe target).
    pub fn probe_judging_paused(&self) -> bool {
        self.probe_paused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one request the probe echo endpoint answered.
    pub fn echo_answered(&self) {
        self.echo_requests.inc();
    }

    /// Requests the probe echo endpoint answered (for tests).
    pub fn echo_requests(&self) -> u64 {
        self.echo_requests.get()
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
        text.counter_vec(
            "farmhand_probes_total",
            "Probes of sold ports by outcome (ok, connect_failed, timeout, proxy_error, bad_reply, slow, ip_mismatch).",
            &self.probes,
        );
        text.histogram_vec(
            "farmhand_probe_first_byte_seconds",
            "Time from a probe's start to the first byte of the target's answer, by protocol (http, socks5).",
            &self.probe_latency,
        );
        text.gauge_vec(
            "farmhand_probe_judging_paused",
            "1 while the plane cannot reach its own probe target: no port is judged (reason echo_unreachable).",
            ["reason"],
            &[(["echo_unreachable"], f64::from(u8::from(self.probe_judging_paused())))],
        );
        text.counter(
            "farmhand_probe_echo_requests_total",
            "Requests the probe echo endpoint answered.",
            &self.echo_requests,
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
