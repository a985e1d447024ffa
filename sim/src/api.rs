//! The ProxySmart API routes (auth and faults are applied by `gate`). Replies are JSON served
//! as `text/html`; failed actions mostly answer HTTP 200 with `{"result":"error",…}`.

use super::error::SimError;
use super::gate::html;
use super::shared::Sim;
use super::{json, listeners, rotation, store, util};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

type Params = Query<HashMap<String, String>>;
type SimState = State<Arc<Sim>>;

/// How many ports `get_free_tcp_ports` offers.
const FREE_PORTS: usize = 10;

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
        .route("/reset_secure/{token}", get(reset_secure))
        .fallback(not_found)
}

fn ok_json(value: &Value) -> Response {
    html(StatusCode::OK, value.to_string())
}

fn outcome(result: Result<(), SimError>, success: &str) -> Response {
    match result {
        Ok(()) => ok_json(&json::success(success)),
        Err(e) => ok_json(&json::error(&e.to_string())),
    }
}

async fn show_status(State(sim): SimState) -> Response {
    ok_json(&json::status_array(&sim.state()))
}

async fn show_single_status(State(sim): SimState, Query(q): Params) -> Response {
    let nick = q.get("arg").map(String::as_str).unwrap_or_default();
    let state = sim.state();
    match state.modems.iter().find(|m| m.nick == nick) {
        Some(modem) => ok_json(&json::status_entry(modem)),
        None => ok_json(&json::error("no such modem")),
    }
}

async fn list_ports(State(sim): SimState) -> Response {
    let now = util::now_stamp(sim.config.utc_offset_s);
    ok_json(&json::ports_by_imei(&sim.state(), &sim.base_url, &now))
}

/// Genuinely free ports on the proxy address, none of them used by a stored port.
async fn free_tcp_ports(State(sim): SimState) -> Response {
    let used = sim.state().used_tcp_ports("");
    match listeners::free_ports(sim.config.proxy_ip, FREE_PORTS, &used) {
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
    let Some(data) = form.ok().and_then(|Form(f)| f.data) else {
        return ok_json(&json::error("invalid data: form field data is required"));
    };
    let result = store::parse(&data).and_then(|input| {
        let port_id = input.port_id.clone();
        let created = sim.state().store_port(input, sim.local_addr.port())?;
        tracing::info!(%port_id, created, "simulator: port stored");
        Ok(())
    });
    outcome(result, "port stored, apply it to make it live")
}

async fn apply_port(State(sim): SimState, Query(q): Params) -> Response {
    let id = q.get("arg").map(String::as_str).unwrap_or_default();
    match listeners::apply_port(&sim, id).await {
        Err(SimError::NoSuchPort) => html(
            StatusCode::NOT_FOUND,
            json::error("no such port").to_string(),
        ),
        other => outcome(other, "port applied"),
    }
}

async fn purge_port(State(sim): SimState, Query(q): Params) -> Response {
    let id = q.get("arg").map(String::as_str).unwrap_or_default();
    outcome(listeners::purge_port(&sim, id).await, "port purged")
}

async fn reset_by_imei(State(sim): SimState, Query(q): Params) -> Response {
    let imei = q.get("IMEI").map(String::as_str).unwrap_or_default();
    outcome(rotation::rotate(&sim, imei), "IP rotation started")
}

async fn reset_by_nick(State(sim): SimState, Query(q): Params) -> Response {
    let nick = q.get("NICK").map(String::as_str).unwrap_or_default();
    let imei = sim.state().imei_by_nick(nick);
    let result = imei
        .ok_or(SimError::NoSuchModem)
        .and_then(|imei| rotation::rotate(&sim, &imei));
    outcome(result, "IP rotation started")
}

/// The unauthenticated rotation link from `RESET_SECURE_LINK`.
async fn reset_secure(State(sim): SimState, Path(token): Path<String>) -> Response {
    let imei = sim.state().port_by_token(&token).map(|p| p.imei.clone());
    let result = imei
        .ok_or(SimError::NoSuchPort)
        .and_then(|imei| rotation::rotate(&sim, &imei));
    outcome(result, "IP rotation started")
}

async fn bandwidth_all(State(sim): SimState) -> Response {
    let state = sim.state();
    let report: serde_json::Map<String, Value> = state
        .ports
        .values()
        .map(|p| (p.id.clone(), json::bandwidth_entry(p)))
        .collect();
    ok_json(&Value::Object(report))
}

async fn bandwidth_one(State(sim): SimState, Query(q): Params) -> Response {
    let id = q.get("arg").map(String::as_str).unwrap_or_default();
    match sim.state().ports.get(id) {
        Some(p) => ok_json(&json::bandwidth_entry(p)),
        None => ok_json(&json::error("no such port")),
    }
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "<html><body><h1>404 Not Found</h1></body></html>",
    )
}
