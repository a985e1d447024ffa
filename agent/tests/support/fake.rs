//! The old private fake ProxySmart, kept only while the tests move to the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use super::inspect;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub const USER: &str = "proxy";
pub const PASSWORD: &str = "canary-proxysmart-pw-7781";
pub const IMEI_1: &str = "356000000000001";
pub const IMEI_OFFLINE: &str = "356000000000002";
/// Not on the fake box until a test adds it with [`FakeBox::add_online_modem`].
pub const IMEI_3: &str = "356000000000003";

/// Faults the fake can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Every call answers a 200 HTML page.
    Html,
    /// Every call answers 500.
    ServerError,
    /// apply_port answers {"result":"error"}.
    ApplyRefused,
    /// store_port stores a different login than asked.
    DropsLogin,
    /// The next N calls answer 500, then the box is healthy again.
    FailNext(u32),
    /// store_port stores the port, then does not answer for 30 s (outcome unknown).
    StoreThenHang,
    /// purge_port answers {"result":"error"} and keeps the port.
    PurgeRefused,
    /// store_port stores the port without its traffic quota (`QUOTA` stays "").
    DropsQuota,
}

#[derive(Debug, Default)]
pub struct BoxState {
    pub modems: Vec<Value>,
    pub ports: BTreeMap<String, Value>,
    pub applied: Vec<String>,
    pub free: Vec<u16>,
    pub fault: Fault,
    pub calls: Vec<String>,
    /// Status reads left before a rotating modem gets its new IP.
    pub rotation_reads: HashMap<String, (u32, String)>,
    /// How later rotations end: status reads until settled, and the IP then shown
    /// (default: 2 reads, 198.51.100.99; `u32::MAX` reads never settle).
    pub rotation_plan: Option<(u32, String)>,
    /// Every IMEI `reset_modem_by_imei` named, in order.
    pub resets: Vec<String>,
    /// Input the agent should never have sent (invalid fields, unknown paths).
    pub violations: Vec<String>,
    /// Every IMEI a write named (store_port, reset), in order.
    pub touched_imeis: Vec<String>,
    /// `bandwidth_report_all`: port id → its entry (counters as the test sets them).
    pub bandwidth: BTreeMap<String, Value>,
    /// Every `store_port` body, as sent.
    pub store_bodies: Vec<Value>,
}

impl BoxState {
    /// Sets the day counters `bandwidth_report_all` shows for `port_id`.
    pub fn set_counters(&mut self, port_id: &str, day_in: Value, day_out: Value) {
        self.bandwidth.insert(
            port_id.to_string(),
            json!({"port": "8001", "portName": "x", "bandwidth_bytes_day_in": day_in,
                   "bandwidth_bytes_day_out": day_out, "bandwidth_bytes_yesterday_in": null,
                   "bandwidth_bytes_month_in": "9.9 GB"}),
        );
    }

    pub fn calls_to(&self, path: &str) -> usize {
        self.calls.iter().filter(|c| c.as_str() == path).count()
    }

    pub fn port_named(&self, name: &str) -> Option<Value> {
        self.ports.values().find(|p| p["portName"] == name).cloned()
    }

    pub fn add_port(&mut self, id: &str, name: &str, imei: &str, http: u16, socks: u16) {
        let port = json!({"portID": id, "portName": name, "HTTP_PORT": http.to_string(), "SOCKS_PORT": socks.to_string(),
            "LOGIN": "l", "PASSWORD": "p", "PROXY_VALID_BEFORE": "", "IMEI": imei});
        self.ports.insert(id.into(), port);
    }
}

pub struct FakeBox {
    pub url: String,
    pub state: Arc<Mutex<BoxState>>,
}

impl FakeBox {
    pub async fn start() -> FakeBox {
        let state = Arc::new(Mutex::new(BoxState {
            modems: vec![
                modem(IMEI_1, "DE_1", "yes", "198.51.100.1"),
                modem(IMEI_OFFLINE, "DE_2", "no", ""),
            ],
            free: (8001..8010).collect(),
            ..BoxState::default()
        }));
        let app = Router::new()
            .route("/apix/show_status_json", get(status))
            .route("/apix/list_ports_json", get(list_ports))
            .route("/apix/get_free_tcp_ports", get(free_ports))
            .route("/crud/store_port", post(store_port))
            .route("/apix/apply_port", get(apply_port))
            .route("/apix/purge_port", get(purge_port))
            .route("/apix/reset_modem_by_imei", get(reset))
            .route("/apix/bandwidth_report_all", get(bandwidth_report))
            .fallback(unknown_path)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeBox { url, state }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut BoxState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds an online modem with `imei`.
    pub fn add_online_modem(&self, imei: &str, ip: &str) {
        self.with(|s| s.modems.push(modem(imei, "DE_X", "yes", ip)));
    }
}

pub fn modem(imei: &str, nick: &str, online: &str, ip: &str) -> Value {
    json!({"modem_details": {"IMEI": imei, "NICK": nick, "MODEL": "E3372"},
           "net_details": {"IS_ONLINE": online, "EXT_IP": ip, "CELLOP": "Vodafone", "SIGNAL_STRENGTH": "20"},
           "IS_ROTATED": "false"})
}

type Shared = State<Arc<Mutex<BoxState>>>;

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// Auth, call log and global faults; `Some` is the response to send instead.
fn gate(state: &mut BoxState, headers: &HeaderMap, path: &str) -> Option<Response> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return Some(html(
            StatusCode::UNAUTHORIZED,
            "<html>401 Authorization Required</html>".into(),
        ));
    }
    state.calls.push(path.to_string());
    match state.fault {
        Fault::Html => Some(html(
            StatusCode::OK,
            "<!DOCTYPE html><html><body>Maintenance</body></html>".into(),
        )),
        Fault::ServerError => Some(html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html>500</html>".into(),
        )),
        Fault::FailNext(n) => {
            state.fault = if n <= 1 {
                Fault::None
            } else {
                Fault::FailNext(n - 1)
            };
            Some(html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<html>500</html>".into(),
            ))
        }
        _ => None,
    }
}

fn ok(v: Value) -> Response {
    html(StatusCode::OK, v.to_string())
}

fn result(success: bool, message: &str) -> Response {
    ok(json!({"result": if success { "success" } else { "error" }, "message": message}))
}

async fn status(State(s): Shared, h: HeaderMap) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, &h, "status") {
        return r;
    }
    let done: Vec<String> = st
        .rotation_reads
        .iter_mut()
        .filter_map(|(imei, (left, _))| {
            *left = left.saturating_sub(1);
            (*left == 0).then(|| imei.clone())
        })
        .collect();
    for imei in done {
        let (_, ip) = st.rotation_reads.remove(&imei).unwrap();
        let m = st
            .modems
            .iter_mut()
            .find(|m| m["modem_details"]["IMEI"] == imei.as_str())
            .unwrap();
        m["net_details"]["EXT_IP"] = json!(ip);
        m["IS_ROTATED"] = json!("false");
    }
    ok(Value::Array(st.modems.clone()))
}

async fn list_ports(State(s): Shared, h: HeaderMap) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, &h, "list_ports") {
        return r;
    }
    let mut by_imei: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in st.ports.values() {
        by_imei
            .entry(p["IMEI"].as_str().unwrap().to_string())
            .or_default()
            .push(p.clone());
    }
    if by_imei.is_empty() {
        return ok(json!([]));
    }
    ok(json!(by_imei))
}

async fn free_ports(State(s): Shared, h: HeaderMap) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, &h, "free_ports") {
        return r;
    }
    ok(json!(st.free))
}

#[derive(serde::Deserialize)]
struct StoreForm {
    data: String,
}

async fn store_port(State(s): Shared, h: HeaderMap, Form(form): Form<StoreForm>) -> Response {
    let (reply, hang) = store_port_now(&s, &h, &form);
    if hang {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    reply
}

/// Stores the port; says whether to hang before replying (`Fault::StoreThenHang`).
fn store_port_now(s: &Arc<Mutex<BoxState>>, h: &HeaderMap, form: &StoreForm) -> (Response, bool) {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, h, "store_port") {
        return (r, false);
    }
    let d: Value = serde_json::from_str(&form.data).unwrap();
    let problems = inspect::store_port(&d);
    st.violations.extend(problems);
    st.store_bodies.push(d.clone());
    st.touched_imeis
        .push(d["IMEI"].as_str().unwrap_or_default().to_string());
    let login = if st.fault == Fault::DropsLogin {
        "someone-else".to_string()
    } else {
        d["proxy_login"].as_str().unwrap().to_string()
    };
    let quota = match (&d["bw_quota"], st.fault) {
        (Value::Number(n), f) if f != Fault::DropsQuota => n.to_string(),
        _ => String::new(),
    };
    let port = json!({"portID": d["portID"], "portName": d["portName"], "IMEI": d["IMEI"],
        "HTTP_PORT": d["http_port"].to_string(), "SOCKS_PORT": d["socks_port"].to_string(),
        "LOGIN": login, "PASSWORD": d["proxy_password"], "PROXY_VALID_BEFORE": d["PROXY_VALID_BEFORE"],
        "QUOTA": quota, "IS_OVER_QUOTA": 0,
        "RESET_SECURE_LINK": {"URL": "http://box/reset/secret"}});
    st.ports
        .insert(d["portID"].as_str().unwrap().to_string(), port);
    (
        result(true, "port stored"),
        st.fault == Fault::StoreThenHang,
    )
}

async fn apply_port(
    State(s): Shared,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, &h, "apply_port") {
        return r;
    }
    let id = q.get("arg").cloned().unwrap_or_default();
    st.violations.extend(inspect::port_id("apply_port", &id));
    if !st.ports.contains_key(&id) {
        return html(
            StatusCode::NOT_FOUND,
            json!({"result": "error", "message": "no such port"}).to_string(),
        );
    }
    if st.fault == Fault::ApplyRefused {
        return result(false, "modem is busy");
    }
    st.applied.push(id);
    result(true, "port applied")
}

async fn purge_port(
    State(s): Shared,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, &h, "purge_port") {
        return r;
    }
    let id = q.get("arg").cloned().unwrap_or_default();
    st.violations.extend(inspect::port_id("purge_port", &id));
    if st.fault == Fault::PurgeRefused {
        return result(false, "port is locked");
    }
    match st.ports.remove(&id) {
        Some(_) => result(true, "port purged"),
        None => result(false, "no such port"),
    }
}

async fn reset(
    State(s): Shared,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, &h, "reset") {
        return r;
    }
    let imei = q.get("IMEI").cloned().unwrap_or_default();
    st.violations
        .extend(inspect::imei("reset_modem_by_imei", &imei));
    st.touched_imeis.push(imei.clone());
    st.resets.push(imei.clone());
    let Some(m) = st
        .modems
        .iter_mut()
        .find(|m| m["modem_details"]["IMEI"] == imei.as_str())
    else {
        return result(false, "no such modem");
    };
    m["net_details"]["EXT_IP"] = json!("IP_RESET");
    m["IS_ROTATED"] = json!("true");
    let plan = st
        .rotation_plan
        .clone()
        .unwrap_or((2, "198.51.100.99".into()));
    st.rotation_reads.insert(imei, plan);
    result(true, "IP rotation started")
}

async fn bandwidth_report(State(s): Shared, h: HeaderMap) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(r) = gate(&mut st, &h, "bandwidth_report_all") {
        return r;
    }
    if st.bandwidth.is_empty() {
        return ok(json!([]));
    }
    ok(json!(st.bandwidth))
}

async fn unknown_path(State(s): Shared, uri: axum::http::Uri) -> Response {
    let mut st = s.lock().unwrap();
    st.violations.push(format!(
        "request to a path ProxySmart has not: {}",
        uri.path()
    ));
    html(StatusCode::NOT_FOUND, "<html>404</html>".into())
}
