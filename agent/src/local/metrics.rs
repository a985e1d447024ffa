//! The agent's Prometheus metrics: the counters the layers above bump (sessions,
//! reconnects, commands by op and outcome, ProxySmart call latency and errors by kind) and
//! the text exposition, with the gauges (connected, ProxySmart reachable, modems) read from
//! live state by whoever renders the page (`run::metrics_page` serves it).
//!
//! It imports nothing above it: a ProxySmart error arrives as its kind's label.

use crate::base::version::{AGENT_VERSION, GIT_COMMIT};
use farmhand_ops::metrics::{Counter, CounterVec, Histogram, Text, LATENCY_BUCKETS_S};
use farmhand_protocol::Outcome;
use std::time::Duration;

/// The agent's counters and histograms; gauges are read from live state when scraped.
#[derive(Debug)]
pub struct AgentMetrics {
    reconnects: Counter,
    sessions: Counter,
    commands: CounterVec<2>,
    proxysmart_latency: Histogram,
    proxysmart_errors: CounterVec<1>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            reconnects: Counter::default(),
            sessions: Counter::default(),
            commands: CounterVec::new(["op", "outcome"]),
            proxysmart_latency: Histogram::new(LATENCY_BUCKETS_S),
            proxysmart_errors: CounterVec::new(["kind"]),
        }
    }
}

impl AgentMetrics {
    /// A session with the plane was established.
    pub fn session_opened(&self) {
        self.sessions.inc();
    }

    /// The agent is about to dial the plane again after a failure or a lost session.
    pub fn reconnecting(&self) {
        self.reconnects.inc();
    }

    /// A command was executed (journal redeliveries are not): `ok` or its error code.
    pub fn command_done(&self, op: &str, outcome: &Outcome) {
        let outcome = match outcome {
            Outcome::Ok { .. } => "ok",
            Outcome::Error { error } => error.code.as_str(),
        };
        self.commands.inc([op, outcome]);
    }

    /// One ProxySmart HTTP call finished (every attempt of a retried read counts), failed
    /// with an error of `error_kind` or not.
    pub fn proxysmart_call(&self, elapsed: Duration, error_kind: Option<&'static str>) {
        self.proxysmart_latency.observe(elapsed);
        if let Some(kind) = error_kind {
            self.proxysmart_errors.inc([kind]);
        }
    }

    /// Shows a zero series for each of these ProxySmart error kinds until one happens.
    pub fn expect_proxysmart_errors(&self, kinds: &[&'static str]) {
        for kind in kinds {
            self.proxysmart_errors.touch([*kind]);
        }
    }

    /// How many `op` commands ended with `outcome` (for tests).
    pub fn commands(&self, op: &str, outcome: &str) -> u64 {
        self.commands.get([op, outcome])
    }

    /// The text exposition, with `gauges` read from live state.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut t = Text::new();
        let info = [AGENT_VERSION, GIT_COMMIT];
        t.gauge_vec(
            "farmhand_agent_info",
            "The agent's version and commit.",
            ["version", "commit"],
            &[(info, 1.0)],
        );
        t.gauge(
            "farmhand_agent_connected",
            "1 while a session with the control plane is open.",
            f64::from(u8::from(gauges.connected)),
        );
        t.counter(
            "farmhand_agent_sessions_total",
            "Sessions established with the control plane.",
            &self.sessions,
        );
        t.counter(
            "farmhand_agent_reconnects_total",
            "Reconnection attempts after a failed dial or a lost session.",
            &self.reconnects,
        );
        t.counter_vec(
            "farmhand_agent_commands_total",
            "Commands executed, by op and outcome (ok or the error code).",
            &self.commands,
        );
        t.gauge(
            "farmhand_agent_proxysmart_reachable",
            "1 if the last ProxySmart poll succeeded.",
            f64::from(u8::from(gauges.proxysmart_reachable)),
        );
        t.gauge(
            "farmhand_agent_modems",
            "Modems reported to the control plane (excluded IMEIs not counted).",
            gauges.modems as f64,
        );
        t.gauge(
            "farmhand_agent_modems_online",
            "Of those, modems ProxySmart reports online.",
            gauges.modems_online as f64,
        );
        t.histogram(
            "farmhand_agent_proxysmart_request_duration_seconds",
            "Duration of ProxySmart HTTP calls, errors included.",
            &self.proxysmart_latency,
        );
        t.counter_vec(
            "farmhand_agent_proxysmart_errors_total",
            "Failed ProxySmart calls by kind.",
            &self.proxysmart_errors,
        );
        t.finish()
    }
}

/// The values the page reads from live state when it is scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// A session with the plane is open.
    pub connected: bool,
    /// The last ProxySmart poll succeeded.
    pub proxysmart_reachable: bool,
    /// Modems reported to the plane.
    pub modems: usize,
    /// Of those, the ones online.
    pub modems_online: usize,
}
