//! `GET /v1/allocations/{id}/probes`: what the probes found about one allocation's port —
//! its recent results (newest first), whether it is degraded and why, and a summary
//! (availability, first-byte p50/p95). Kept in the store: every node of a cluster answers
//! alike, and an ended allocation's probes stay as long as its detail (`allocation_detail_days`).

use super::allocations::owned;
use super::auth::AnyRole;
use super::json::ApiPath;
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::rfc3339;
use crate::probe::{Failure, ProbeResult, Track};
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::time::Duration;

/// An allocation's probes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "allocation_id": "al_9f3c2a41d6b84e0f9a7c5e1b2d3f4a5b", "enabled": true, "judging": "active",
    "health": "degraded", "reason": "ip_mismatch", "failures_in_a_row": 3,
    "summary": {"probes": 40, "ok": 37, "availability_pct": 92.5, "p50_ms": 180, "p95_ms": 420},
    "results": [{"at": "2026-12-07T10:00:00Z", "ok": false, "reason": "ip_mismatch",
        "protocol": "http", "connect_ms": 41, "first_byte_ms": 190,
        "egress_ip": "198.51.100.77", "modem_ip": "198.51.100.4", "node": "nd_4f1c9a"}]
}))]
pub struct ProbesView {
    allocation_id: String,
    /// Whether this plane probes at all (`[probe] enabled`).
    enabled: bool,
    /// `active`; `paused` while the plane cannot reach its own probe target (no port is
    /// judged then); `refused_by_seller` when the box's seller policy forbids probes;
    /// `off` when probes are disabled.
    judging: &'static str,
    /// `ok`, `degraded`, or `unknown` (not probed yet).
    health: &'static str,
    /// Why it is degraded.
    reason: Option<Failure>,
    /// Failed probes in a row.
    failures_in_a_row: u32,
    summary: ProbeSummary,
    /// The kept results, newest first (at most `[probe] history`).
    results: Vec<ProbeView>,
}

/// Figures over the kept results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProbeSummary {
    /// Results kept.
    probes: usize,
    /// Of which succeeded.
    ok: usize,
    /// `ok / probes` in percent (`null` before the first probe).
    availability_pct: Option<f64>,
    /// Median first byte of the successful probes, ms.
    p50_ms: Option<u64>,
    /// 95th percentile first byte of the successful probes, ms.
    p95_ms: Option<u64>,
}

/// One probe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProbeView {
    /// When it ran.
    #[schema(format = DateTime)]
    at: String,
    ok: bool,
    /// Why it failed.
    reason: Option<Failure>,
    /// Which protocol failed: `http` or `socks5`.
    protocol: Option<&'static str>,
    /// TCP connect time of the HTTP fetch, ms.
    connect_ms: Option<u64>,
    /// First byte of the HTTP fetch's answer, ms.
    first_byte_ms: Option<u64>,
    /// The IP the probe target saw.
    egress_ip: Option<String>,
    /// The IP the modem reported then (`null`: unknown, e.g. rotating).
    modem_ip: Option<String>,
    /// The plane node that ran it (`/healthz` `node`): its network path is the one measured.
    node: String,
}

/// `GET /v1/allocations/{id}/probes`.
#[utoipa::path(get, operation_id = "get_allocation_probes", path = "/v1/allocations/{allocation_id}/probes", tag = "allocations", security(("admin" = []), ("marketplace" = [])), params(("allocation_id" = String, Path, description = "`al_…`")),
    responses(
        (status = 200, description = "What the probes of its port found.", body = ProbesView),
        (status = 404, description = "No such allocation for this key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn show(
    AnyRole(caller): AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<ProbesView>, ApiError> {
    let record = owned(&state, &caller, &id).await?;
    let track = state.store.probe_track(&id).await?.map(Track::from_record);
    let refused = state
        .fleet
        .agent(&record.agent_id)
        .is_some_and(|a| a.probes_refused);
    let judging = match (state.probing, refused, state.metrics.probe_judging_paused()) {
        (false, _, _) => "off",
        (true, true, _) => "refused_by_seller",
        (true, false, true) => "paused",
        (true, false, false) => "active",
    };
    let track = track.unwrap_or_default();
    let health = track.health();
    Ok(Json(ProbesView {
        allocation_id: id,
        enabled: state.probing,
        judging,
        health,
        reason: track.degraded,
        failures_in_a_row: track.failures_in_a_row,
        summary: summary(&track),
        results: track.results.iter().rev().map(result).collect(),
    }))
}

fn summary(track: &Track) -> ProbeSummary {
    let s = track.summary();
    ProbeSummary {
        probes: s.probes,
        ok: s.ok,
        availability_pct: crate::quality::percent(s.ok as u64, s.probes as u64),
        p50_ms: s.p50.map(ms),
        p95_ms: s.p95.map(ms),
    }
}

fn result(r: &ProbeResult) -> ProbeView {
    ProbeView {
        at: rfc3339(r.at),
        ok: r.failure.is_none(),
        reason: r.failure,
        protocol: r.protocol,
        connect_ms: r.connect.map(ms),
        first_byte_ms: r.first_byte.map(ms),
        egress_ip: r.egress_ip.clone(),
        modem_ip: r.modem_ip.clone(),
        node: r.node.clone(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
