//! The box's HTML port forms, the path some integrations use instead of `/crud/store_port`
//! (spec: "Creating, changing, removing a port"), with their traps:
//! - `GET /conf/add_port?imei=…` — a form prefilled with a port id, a free pair of ports and
//!   credentials of the box's choosing; `POST` to the same URL saves it. The save answers
//!   302 to `/conf` on success and 302 back to the form on a silent rejection (a bad
//!   `portName`, a non-number limit, ports not free or not a matched pair on a pool box,
//!   other credentials than offered on a box that refuses custom ones): only reading the
//!   port list back tells them apart. A saved port is not applied.
//! - `GET /conf/edit_port/{id}` shows the port with the password BLANK; posting it back as
//!   it is wipes the password.
//! - `GET /conf/delete_port/{id}` removes the port (302 to `/conf`).
//! - With `Quirks::panel_login`, all of them first want the web-panel login: a 302 to
//!   `/modem/login?next=…`, where `POST` `username`/`password` (the admin credentials) sets
//!   two cookies, the second of which (`session`) is the one checked, for 10 minutes.

use super::error::SimError;
use super::gate::html;
use super::shared::Sim;
use super::state::State;
use super::store::PortInput;
use super::{inspect, listeners, pools, util};
use axum::extract::{Path, Query, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Params = Query<HashMap<String, String>>;
type Fields = Form<HashMap<String, String>>;
type SimState = Extract<Arc<Sim>>;

/// How long a web-panel session lasts.
const SESSION: Duration = Duration::from_secs(600);

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/conf/add_port", get(add_form).post(add_save))
        .route("/conf/edit_port/{id}", get(edit_form).post(edit_save))
        .route("/conf/delete_port/{id}", get(delete))
        .route("/modem/login", get(login_page).post(login))
}

fn redirect(to: &str) -> Response {
    let mut resp = html(StatusCode::FOUND, "");
    if let Ok(value) = header::HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// The login wall: `Some(redirect)` when the panel wants a login first.
fn wall(sim: &Sim, headers: &HeaderMap, path: &str) -> Option<Response> {
    let mut state = sim.state();
    if !state.quirks.panel_login {
        return None;
    }
    let now = Instant::now();
    state.sessions.retain(|_, until| *until > now);
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("session="))
        .any(|token| state.sessions.contains_key(token));
    (!cookies).then(|| redirect(&format!("/modem/login?next={path}")))
}

async fn login_page() -> Response {
    html(StatusCode::OK, LOGIN_PAGE)
}

async fn login(Extract(sim): SimState, Form(f): Fields) -> Response {
    let given = format!(
        "{}:{}",
        f.get("username").map(String::as_str).unwrap_or_default(),
        f.get("password").map(String::as_str).unwrap_or_default()
    );
    let expected = format!("{}:{}", sim.config.username, sim.config.password);
    if !super::gate::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return html(StatusCode::OK, LOGIN_PAGE);
    }
    let token = util::random_hex(16);
    sim.state()
        .sessions
        .insert(token.clone(), Instant::now() + SESSION);
    let mut resp = redirect("/conf");
    for cookie in [
        "allowCGP=yes; Path=/".to_string(),
        format!("session={token}; Path=/; HttpOnly"),
    ] {
        if let Ok(value) = header::HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    resp
}

async fn add_form(Extract(sim): SimState, headers: HeaderMap, Query(q): Params) -> Response {
    let imei = q.get("imei").cloned().unwrap_or_default();
    if let Some(r) = wall(&sim, &headers, &format!("/conf/add_port?imei={imei}")) {
        return r;
    }
    let mut state = sim.state();
    if state.modem(&imei).is_none() {
        return html(
            StatusCode::NOT_FOUND,
            "<html><body>no such modem</body></html>",
        );
    }
    let Some((http, socks)) = offer_pair(&sim, &state) else {
        return html(StatusCode::OK, "<html><body>no free ports</body></html>");
    };
    let port_id = format!("port{}", util::random_alnum(8));
    let (login, password) = (util::random_alnum(8), util::random_alnum(12));
    state
        .offered
        .insert(port_id.clone(), (login.clone(), password.clone()));
    let fields = [
        ("IMEI", imei.as_str()),
        ("portID", &port_id),
        ("portName", ""),
        ("http_port", &http.to_string()),
        ("socks_port", &socks.to_string()),
        ("proxy_login", &login),
        ("proxy_password", &password),
        ("PROXY_VALID_BEFORE", ""),
        ("bw_quota", "0"),
        ("bandlimin", "0"),
        ("bandlimout", "0"),
        ("MAXCONN", "0"),
        ("CONNLIM", "0"),
    ]
    .map(|(k, v)| (k, v.to_string()));
    html(StatusCode::OK, page("add port", &fields))
}

async fn add_save(
    Extract(sim): SimState,
    headers: HeaderMap,
    Query(q): Params,
    Form(f): Fields,
) -> Response {
    let imei = q.get("imei").cloned().unwrap_or_default();
    let back = format!("/conf/add_port?imei={imei}");
    if let Some(r) = wall(&sim, &headers, &back) {
        return r;
    }
    let reserved = sim.local_addr.port();
    let mut state = sim.state();
    let input = match accept(&state, &f, &imei, true) {
        Ok(input) => input,
        Err(why) => {
            tracing::info!(%why, "simulator: the add_port form was silently rejected");
            return redirect(&back);
        }
    };
    let port_id = input.port_id.clone();
    state.delay_visibility(&port_id);
    match state.store_as_asked(input, reserved) {
        Ok(_) => {
            state.offered.remove(&port_id);
            tracing::info!(%port_id, "simulator: port saved through the form");
            redirect("/conf")
        }
        Err(e) => {
            tracing::info!(error = %e, "simulator: the add_port form was silently rejected");
            redirect(&back)
        }
    }
}

async fn edit_form(Extract(sim): SimState, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = wall(&sim, &headers, &format!("/conf/edit_port/{id}")) {
        return r;
    }
    let state = sim.state();
    let Some(p) = state.ports.get(&id) else {
        return redirect("/conf");
    };
    let fields = [
        ("IMEI", p.imei.clone()),
        ("portID", p.id.clone()),
        ("portName", p.name.clone()),
        ("http_port", p.http_port.to_string()),
        ("socks_port", p.socks_port.to_string()),
        ("proxy_login", p.login.clone()),
        // The trap: the form never shows the password.
        ("proxy_password", String::new()),
        ("PROXY_VALID_BEFORE", p.valid_before.clone()),
        ("bw_quota", p.quota.clone()),
        ("bandlimin", p.bandlimin.clone()),
        ("bandlimout", p.bandlimout.clone()),
        ("MAXCONN", "0".to_string()),
        ("CONNLIM", "0".to_string()),
    ];
    html(StatusCode::OK, page("edit port", &fields))
}

async fn edit_save(
    Extract(sim): SimState,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(mut f): Fields,
) -> Response {
    let back = format!("/conf/edit_port/{id}");
    if let Some(r) = wall(&sim, &headers, &back) {
        return r;
    }
    let reserved = sim.local_addr.port();
    let mut state = sim.state();
    let Some(imei) = state.ports.get(&id).map(|p| p.imei.clone()) else {
        return redirect("/conf");
    };
    f.insert("portID".to_string(), id.clone());
    match accept(&state, &f, &imei, false) {
        Ok(input) => {
            state.delay_visibility(&id);
            if state.store_as_asked(input, reserved).is_ok() {
                return redirect("/conf");
            }
            redirect(&back)
        }
        Err(why) => {
            tracing::info!(%why, "simulator: the edit_port form was silently rejected");
            redirect(&back)
        }
    }
}

async fn delete(Extract(sim): SimState, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = wall(&sim, &headers, &format!("/conf/delete_port/{id}")) {
        return r;
    }
    {
        let mut state = sim.state();
        if state.write_fault == Some(super::faults::WriteFault::PurgeRefused) {
            // A box that will not remove the port refuses it here too, silently.
            return redirect("/conf");
        }
        state.delay_visibility(&id);
    }
    match listeners::purge_port(&sim, &id).await {
        Ok(()) | Err(SimError::NoSuchPort) => redirect("/conf"),
        Err(e) => {
            tracing::warn!(error = %e, "simulator: delete_port failed");
            redirect("/conf")
        }
    }
}

/// A free pair the form offers: a matched pair from the pools on a pool box, else two free
/// ports.
fn offer_pair(sim: &Sim, state: &State) -> Option<(u16, u16)> {
    let used = state.used_tcp_ports("");
    if state.quirks.port_pools {
        let ports = pools::free_pairs(
            sim.config.proxy_ip,
            1,
            &used,
            usize::from(sim.local_addr.port()),
        );
        return Some((*ports.first()?, *ports.get(1)?));
    }
    let ports = listeners::free_ports(sim.config.proxy_ip, 2, &used).ok()?;
    Some((*ports.first()?, *ports.get(1)?))
}

/// The form's fields as the box validates them; `Err` is a silent rejection.
fn accept(
    state: &State,
    f: &HashMap<String, String>,
    imei: &str,
    new: bool,
) -> Result<PortInput, String> {
    let text = |k: &str| f.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let port_id = text("portID");
    let name = text("portName");
    if port_id.is_empty() || !inspect::port_id("form", &name).is_empty() || name.len() < 4 {
        return Err(format!("portID {port_id:?} / portName {name:?}"));
    }
    let number = |k: &str| -> Result<Option<String>, String> {
        match text(k).as_str() {
            "" | "0" => Ok(None),
            v if v.parse::<u64>().is_ok() => Ok(Some(v.to_string())),
            v => Err(format!("{k} {v:?} is not a whole number")),
        }
    };
    let port = |k: &str| {
        text(k)
            .parse::<u16>()
            .map_err(|_| format!("{k} is not a port"))
    };
    let (http_port, socks_port) = (port("http_port")?, port("socks_port")?);
    if state.quirks.drops_unmatched_pair && !pools::matched(http_port, socks_port) {
        return Err("not a matched pair".into());
    }
    let (login, password) = (text("proxy_login"), text("proxy_password"));
    if new && login.is_empty() {
        return Err("no login".into());
    }
    if state.quirks.refuses_custom_credentials {
        let offered = match state.ports.get(&port_id) {
            Some(p) => Some((p.login.clone(), p.password.clone())),
            None => state.offered.get(&port_id).cloned(),
        };
        if offered.is_some_and(|(l, p)| l != login || (p != password && !password.is_empty())) {
            return Err("custom credentials".into());
        }
    }
    let valid_before = match util::normalise_stamp(&text("PROXY_VALID_BEFORE")) {
        Some(v) if state.quirks.expiry_minutes => Some(v.chars().take(16).collect::<String>()),
        Some(v) => Some(v),
        None => return Err("bad PROXY_VALID_BEFORE".into()),
    };
    let quota = number("bw_quota")?;
    Ok(PortInput {
        imei: imei.to_string(),
        port_id,
        port_name: name,
        login,
        password,
        http_port,
        socks_port,
        valid_before,
        quota_type: quota.as_ref().map(|_| text("QUOTA_TYPE")),
        quota_direction: quota.as_ref().map(|_| text("QUOTA_DIRECTION")),
        quota,
        bandlimin: number("bandlimin")?,
        bandlimout: number("bandlimout")?,
    })
}

/// The form page: the inputs, and the two selects with the values a box was seen to take
/// selected.
fn page(title: &str, fields: &[(&str, String)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(name, value)| {
            let kind = if *name == "IMEI" { "hidden" } else { "text" };
            format!(
                "  <label>{name}</label><input class=crud type=\"{kind}\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><title>ProxySmart - {title}</title></head><body>\n\
         <form method=\"post\" action=\"\">\n{inputs}\
           <select name=\"QUOTA_TYPE\"><option value=\"daily\">daily</option>\
         <option value=\"monthly\" selected>monthly</option></select>\n\
           <select name=\"QUOTA_DIRECTION\"><option value=\"in\">in</option>\
         <option value=\"out\">out</option><option value=\"inout\" selected>in+out</option></select>\n\
           <select name=\"OS\"><option value=\"\">default</option><option value=\"win\">Windows</option></select>\n\
           <input type=\"submit\" value=\"Save\">\n</form></body></html>\n"
    )
}

fn escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>ProxySmart - login</title></head><body>\n\
<form method=\"post\" action=\"/modem/login\"><input name=\"username\"><input type=\"password\" name=\"password\">\
<input type=\"submit\" value=\"Login\"></form></body></html>\n";
