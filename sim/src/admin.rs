//! The `/_sim/` admin interface: plain JSON, no auth, never faulted, for scripts that drive
//! the `proxysmart-sim` binary (tests in-process use `SimHandle`).
//!
//! - `GET  /_sim/state` → `{"modems":[…],"ports":[…],"fault":{…},"api_calls":{…},"rotation_delay_ms":N,
//!   "store_port_replaces":bool,"quirks":[names],"violations":[…]}`
//! - `POST /_sim/modems/{imei}` with any of `online`, `ext_ip`, `carrier`, `signal`,
//!   `same_ip_next_rotation`, and the proxy path: `proxy` (`ok|blackhole|dead`),
//!   `egress_ip` ("" = the modem's own), `first_byte_delay_ms` → the modem; 404 unknown
//!   IMEI; 400 bad body.
//! - `POST /_sim/fault` `{"kind":"none|latency|status500|html|garbage|hang|refuse","ms":N}`
//! - `POST /_sim/rotation_delay` `{"ms":N}`
//! - `POST /_sim/reset_counters` (API call counts), `POST /_sim/reset_traffic` (bandwidth)
//! - `POST /_sim/ports` `{"imei":"…","port_name":"…","apply":true}` → a foreign port.

use super::faults::{Fault, FaultSpec};
use super::handle::SimHandle;
use super::shared::Sim;
use super::state::PathFault;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

type SimState = State<Arc<Sim>>;

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/state", get(state))
        .route("/_sim/modems/{imei}", post(patch_modem))
        .route("/_sim/fault", post(set_fault))
        .route("/_sim/rotation_delay", post(set_rotation_delay))
        .route("/_sim/reset_counters", post(reset_counters))
        .route("/_sim/reset_traffic", post(reset_traffic))
        .route("/_sim/ports", post(add_port))
}

fn handle(sim: Arc<Sim>) -> SimHandle {
    SimHandle::new(sim)
}

fn fail(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// Parses a JSON body whatever its content type (scripts often forget the header).
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad JSON body: {e}"))
}

async fn state(State(sim): SimState) -> Response {
    let (rotation_delay_ms, store_port_replaces, quirks, violations) = {
        let state = sim.state();
        (
            state.rotation_delay.as_millis(),
            state.store_port_replaces,
            state.quirks.enabled(),
            state.violations.clone(),
        )
    };
    let h = handle(sim);
    Json(json!({
        "modems": h.modems(),
        "ports": h.ports(),
        "fault": h.fault().to_spec(),
        "api_calls": h.all_api_calls(),
        "rotation_delay_ms": rotation_delay_ms,
        "store_port_replaces": store_port_replaces,
        "quirks": quirks,
        "violations": violations,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModemPatch {
    online: Option<bool>,
    ext_ip: Option<String>,
    carrier: Option<String>,
    signal: Option<String>,
    same_ip_next_rotation: Option<bool>,
    /// What the proxies do (`ok`, `blackhole`, `dead`).
    proxy: Option<PathFault>,
    /// Where traffic leaves from ("" = the modem's `EXT_IP`).
    egress_ip: Option<String>,
    first_byte_delay_ms: Option<u64>,
}

async fn patch_modem(State(sim): SimState, Path(imei): Path<String>, body: Bytes) -> Response {
    let patch: ModemPatch = match parse(&body) {
        Ok(p) => p,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let result = {
        let mut state = sim.state();
        state.modem_mut(&imei).map(|m| {
            m.online = patch.online.unwrap_or(m.online);
            m.ip = patch.ext_ip.unwrap_or_else(|| m.ip.clone());
            m.carrier = patch.carrier.unwrap_or_else(|| m.carrier.clone());
            m.signal = patch.signal.unwrap_or_else(|| m.signal.clone());
            m.same_ip_next = patch.same_ip_next_rotation.unwrap_or(m.same_ip_next);
            m.path.fault = patch.proxy.unwrap_or(m.path.fault);
            if let Some(egress) = patch.egress_ip {
                m.path.egress_ip = (!egress.is_empty()).then_some(egress);
            }
            m.path.first_byte_delay_ms = patch
                .first_byte_delay_ms
                .unwrap_or(m.path.first_byte_delay_ms);
            m.snapshot()
        })
    };
    match result {
        Ok(modem) => Json(modem).into_response(),
        Err(e) => fail(StatusCode::NOT_FOUND, e),
    }
}

async fn set_fault(State(sim): SimState, body: Bytes) -> Response {
    let spec: FaultSpec = match parse(&body) {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    match Fault::from_spec(&spec) {
        Some(fault) => {
            sim.set_fault(fault);
            Json(fault.to_spec()).into_response()
        }
        None => fail(
            StatusCode::BAD_REQUEST,
            format!("unknown fault kind {:?}", spec.kind),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayBody {
    ms: u64,
}

async fn set_rotation_delay(State(sim): SimState, body: Bytes) -> Response {
    match parse::<DelayBody>(&body) {
        Ok(d) => {
            handle(sim).set_rotation_delay(Duration::from_millis(d.ms));
            Json(json!({ "rotation_delay_ms": d.ms })).into_response()
        }
        Err(e) => fail(StatusCode::BAD_REQUEST, e),
    }
}

async fn reset_counters(State(sim): SimState) -> Json<Value> {
    handle(sim).reset_counters();
    Json(json!({ "ok": true }))
}

async fn reset_traffic(State(sim): SimState) -> Json<Value> {
    handle(sim).reset_traffic();
    Json(json!({ "ok": true }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignBody {
    imei: String,
    #[serde(default)]
    port_name: String,
    #[serde(default)]
    apply: bool,
}

async fn add_port(State(sim): SimState, body: Bytes) -> Response {
    let req: ForeignBody = match parse(&body) {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let h = handle(sim);
    let port = match h.add_foreign_port(&req.imei, &req.port_name) {
        Ok(p) => p,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    if req.apply {
        if let Err(e) = h.apply_port(&port.port_id).await {
            return fail(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    }
    Json(h.port(&port.port_id)).into_response()
}
