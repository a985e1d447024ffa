//! The ProxySmart API routes (auth and faults are applied by `gate`). Replies are JSON served
//! as `text/html`; failed actions mostly answer HTTP 200 with `{"result":"error",…}`, and a
//! successful one as this box words it (`json::success_body`). A field box's other quirks
//! are applied here and in `store` (see `Quirks`).

use super::error::SimError;
use super::faults::WriteFault;
use super::gate::html;
use super::shared::Sim;
use super::{inspect, json, listeners, pools, rotation, store, util};
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Params = Query<HashMap<String, String>>;
type SimState = State<Arc<Sim>>;

/// How long a `store_port` with `WriteFault::StoreThenHang` keeps the caller waiting.
const HANG: Duration = Duration::from_secs(30);

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/apix/show_status_json", get(show_status))
        .route("/apix/show_single_status_json", get(show_single_status))
        .route("/apix/list_ports_json", get(list_ports))
        .route("/apix/get_free_tcp_ports", get(free_tcp_ports))
        .route("/crud/store_port", post(store_port))
        .route("/apix/apply_port", get(apply_port))
        .route("/apix/purge_port", get(purge_port))
        .route("/apix/reset_modem_by_imei", get(reset_by_imei))
        .route("/apix/reset_modem_by_nick", get(reset_by_nick))
        .route("/apix/bandwidth_report_all", get(bandwidth_all))
        .route("/apix/bandwidth_report_json", get(bandwidth_one))
        .route("/apix/reset_ip_secure", get(reset_secure))
        .merge(super::form::routes())
        .fallback(unknown_path)
}

fn ok_json(value: &Value) -> Response {
    html(StatusCode::OK, value.to_string())
}

fn outcome(sim: &Sim, result: Result<(), SimError>, endpoint: &str, success: &str) -> Response {
    match result {
        Ok(()) => html(
            StatusCode::OK,
            json::success_body(&sim.state().quirks, endpoint, success),
        ),
        Err(e) => ok_json(&json::error(&e.to_string())),
    }
}

async fn show_status(State(sim): SimState) -> Response {
    ok_json(&json::status_array(&sim.state()))
}

/// One modem by NICK; a field box also takes an IMEI and answers an array of one.
async fn show_single_status(State(sim): SimState, Query(q): Params) -> Response {
    let arg = q.get("arg").map(String::as_str).unwrap_or_default();
    let state = sim.state();
    let array = state.quirks.single_status_array;
    let found = state
        .modems
        .iter()
        .find(|m| m.nick == arg || (array && m.imei == arg));
    match found {
        Some(modem) if array => ok_json(&Value::Array(vec![json::status_entry(
            modem,
            &state.quirks,
        )])),
        Some(modem) => ok_json(&json::status_entry(modem, &state.quirks)),
        None => ok_json(&json::error("no such modem")),
    }
}

async fn list_ports(State(sim): SimState) -> Response {
    let now = util::now_stamp(sim.config.utc_offset_s);
    let mut state = sim.state();
    ok_json(&json::ports_by_imei(&mut state, &sim.base_url, &now))
}

/// Genuinely free ports on the proxy address, none of them used by a stored port: matched
/// pairs from the two pools on a pool box, any free ports otherwise.
async fn free_tcp_ports(State(sim): SimState) -> Response {
    let (used, pools, offered) = {
        let state = sim.state();
        let offered = state.free_ports_offered;
        (state.used_tcp_ports(""), state.quirks.port_pools, offered)
    };
    if pools {
        let owner = usize::from(sim.local_addr.port());
        return ok_json(&Value::from(pools::free_pairs(
            sim.config.proxy_ip,
            offered,
            &used,
            owner,
        )));
    }
    match listeners::free_ports(sim.config.proxy_ip, offered, &used) {
        Ok(ports) => ok_json(&Value::from(ports)),
        Err(e) => ok_json(&json::error(&format!("cannot list free ports: {e}"))),
    }
}

#[derive(Debug, Deserialize)]
struct StoreForm {
    data: Option<String>,
}

async fn store_port(
    State(sim): SimState,
    form: Result<Form<StoreForm>, FormRejection>,
) -> Response {
    if sim.state().quirks.no_json_write {
        return not_found().await;
    }
    let Some(data) = form.ok().and_then(|Form(f)| f.data) else {
        return ok_json(&json::error("invalid data: form field data is required"));
    };
    let hang = {
        let mut state = sim.state();
        match serde_json::from_str::<Value>(&data) {
            Ok(doc) => {
                for problem in inspect::store_port(&doc) {
                    state.violation(problem);
                }
                state.record_store_body(doc);
            }
            Err(_) => state.violation("store_port data: not JSON".to_string()),
        }
        state.write_fault == Some(WriteFault::StoreThenHang)
    };
    let result = store::parse(&data).and_then(|input| {
        let asked = input.port_id.clone();
        let stored = sim.state().store_port(input, sim.local_addr.port())?;
        tracing::info!(%asked, ?stored, "simulator: store_port");
        Ok(())
    });
    if hang {
        tokio::select! {
            _ = tokio::time::sleep(HANG) => {}
            _ = sim.shutdown.cancelled() => {}
        }
    }
    outcome(
        &sim,
        result,
        "store_port",
        "port stored, apply it to make it live",
    )
}

async fn apply_port(State(sim): SimState, Query(q): Params) -> Response {
    let id = q.get("arg").map(String::as_str).unwrap_or_default();
    let refused = {
        let mut state = sim.state();
        for problem in inspect::port_id("apply_port", id) {
            state.violation(problem);
        }
        state.write_fault == Some(WriteFault::ApplyRefused)
    };
    if refused && sim.state().ports.contains_key(id) {
        return ok_json(&json::error("modem is busy"));
    }
    match listeners::apply_port(&sim, id).await {
        Err(SimError::NoSuchPort) => html(
            StatusCode::NOT_FOUND,
            json::error("no such port").to_string(),
        ),
        other => outcome(&sim, other, "apply_port", "port applied"),
    }
}

async fn purge_port(State(sim): SimState, Query(q): Params) -> Response {
    let id = q.get("arg").map(String::as_str).unwrap_or_default();
    {
        let mut state = sim.state();
        for problem in inspect::port_id("purge_port", id) {
            state.violation(problem);
        }
        if state.write_fault == Some(WriteFault::PurgeRefused) {
            return ok_json(&json::error("port is locked"));
        }
        state.delay_visibility(id);
    }
    outcome(
        &sim,
        listeners::purge_port(&sim, id).await,
        "purge_port",
        "port purged",
    )
}

async fn reset_by_imei(State(sim): SimState, Query(q): Params) -> Response {
    let imei = q.get("IMEI").map(String::as_str).unwrap_or_default();
    for problem in inspect::imei("reset_modem_by_imei", imei) {
        sim.state().violation(problem);
    }
    reset(&sim, Some(imei.to_string()))
}

async fn reset_by_nick(State(sim): SimState, Query(q): Params) -> Response {
    let nick = q.get("NICK").map(String::as_str).unwrap_or_default();
    let imei = sim.state().imei_by_nick(nick);
    reset(&sim, imei)
}

/// A rotation request; a field box answers the first one for a modem "busy".
fn reset(sim: &Arc<Sim>, imei: Option<String>) -> Response {
    let Some(imei) = imei else {
        return ok_json(&json::error(&SimError::NoSuchModem.to_string()));
    };
    {
        let mut state = sim.state();
        if state.quirks.busy_first_reset
            && state.modem(&imei).is_some()
            && state.busy_answered.insert(imei.clone())
        {
            return ok_json(&json::error(&SimError::ModemBusy.to_string()));
        }
    }
    outcome(
        sim,
        rotation::rotate(sim, &imei),
        "reset",
        "IP rotation started",
    )
}

/// The unauthenticated rotation link from `RESET_SECURE_LINK`
/// (`/apix/reset_ip_secure?hash=aes_ecb:HEX`).
async fn reset_secure(State(sim): SimState, Query(q): Params) -> Response {
    let token = q
        .get("hash")
        .and_then(|h| h.strip_prefix("aes_ecb:"))
        .unwrap_or_default();
    let imei = sim.state().port_by_token(token).map(|p| p.imei.clone());
    let result = imei
        .ok_or(SimError::NoSuchPort)
        .and_then(|imei| rotation::rotate(&sim, &imei));
    outcome(&sim, result, "reset", "IP rotation started")
}

async fn bandwidth_all(State(sim): SimState) -> Response {
    let state = sim.state();
    let mut report: serde_json::Map<String, Value> = state
        .ports
        .values()
        .map(|p| (p.id.clone(), json::bandwidth_entry(p, &state.quirks)))
        .collect();
    for (id, entry) in &state.bandwidth_override {
        report.insert(id.clone(), entry.clone());
    }
    if report.is_empty() {
        return ok_json(&Value::Array(Vec::new()));
    }
    ok_json(&Value::Object(report))
}

async fn bandwidth_one(State(sim): SimState, Query(q): Params) -> Response {
    let id = q.get("arg").map(String::as_str).unwrap_or_default();
    let state = sim.state();
    if let Some(entry) = state.bandwidth_override.get(id) {
        return ok_json(entry);
    }
    match state.ports.get(id) {
        Some(p) => ok_json(&json::bandwidth_entry(p, &state.quirks)),
        None => ok_json(&json::error("no such port")),
    }
}

/// A path the API does not have: 404, and a violation (a client calling it is guessing).
async fn unknown_path(State(sim): SimState, uri: axum::http::Uri) -> Response {
    sim.state().violation(format!(
        "request to a path ProxySmart has not: {}",
        uri.path()
    ));
    not_found().await
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "<html><body><h1>404 Not Found</h1></body></html>",
    )
}
