//! Tolerant parsers for ProxySmart's answers, and normalisation of its string-typed modem
//! status into `farmhand_protocol::Modem`.
//!
//! The body is always parsed, whatever the Content-Type says (JSON is served as text/html,
//! and an HTML page can come with status 200). Unknown fields are ignored; values that can be
//! strings or numbers are accepted as either.

use super::error::ProxysmartError;
use crate::base::masked::Masked;
use farmhand_protocol::Modem;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Messages that mean "refused" even in an HTTP-200 reply without a `result` field (the
/// phrases live clients match on).
const REFUSAL_PHRASES: [&str; 9] = [
    "not available",
    "restart the modem",
    "is busy",
    "no such",
    "not found",
    "web app",
    "webapp",
    "cannot",
    "unable",
];

/// How the box worded a successful action: real boxes differ (spec "Second look"), and the
/// box profile records which forms were seen. Success is decided by reading the box's state
/// back, never by this alone.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ReplyForm {
    /// `{"result":"success",…}` (or "ok").
    JsonResult,
    /// `{"result":true}` or a bare JSON `true`.
    JsonBool,
    /// A JSON object without `result` and without an error message.
    JsonOther,
    /// A bare `OK` (or "success", "true") as text.
    TextOk,
    /// An empty body.
    Empty,
}

/// One port from `list_ports_json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// The modem (the key the port was listed under).
    pub imei: String,
    /// ProxySmart's port id.
    pub port_id: String,
    /// Free-text label; ours are `farmhand-<allocation_id>`.
    pub port_name: String,
    /// HTTP proxy port, if it parsed.
    pub http_port: Option<u16>,
    /// SOCKS5 proxy port, if it parsed.
    pub socks_port: Option<u16>,
    /// Proxy login.
    pub login: String,
    /// Proxy password (clear text on the box; masked here).
    pub password: Masked,
    /// Expiry as ProxySmart shows it ("" = none).
    pub valid_before: String,
    /// When the box created the port, box-local time without zone ("" if absent); how the
    /// agent learns the box's UTC offset (see `box_clock`).
    pub created_at: String,
    /// `QUOTA` as the box shows it ("" = none).
    pub quota: String,
    /// `IS_OVER_QUOTA`: the quota is used up.
    pub over_quota: bool,
    /// `IS_EXPIRED` as the box shows it (`None`: not listed).
    pub expired: Option<bool>,
    /// The speed limits, when the box lists them (`bandlimin` / `bandlimout`; the
    /// documented port list does not include them, some boxes do).
    pub bandlimin: Option<String>,
    /// See `bandlimin`.
    pub bandlimout: Option<String>,
    /// `bw_quota` when the box lists it (a number, as the box took it; field boxes show
    /// the quota here while `QUOTA` stays "").
    pub bw_quota: Option<String>,
}

/// Parses a body as JSON, recognising HTML pages and garbage as `Malformed`.
pub fn parse_json(body: &str) -> Result<Value, ProxysmartError> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('<') {
        return Err(ProxysmartError::malformed("an HTML page instead of JSON"));
    }
    if trimmed.is_empty() {
        return Err(ProxysmartError::malformed("an empty body instead of JSON"));
    }
    serde_json::from_str(trimmed)
        .map_err(|e| ProxysmartError::malformed(format!("not JSON ({} bytes): {e}", body.len())))
}

/// `show_status_json`: the raw modem entries (an array, or `{"modems": [...]}`).
pub fn parse_status(body: &str) -> Result<Vec<Value>, ProxysmartError> {
    match parse_json(body)? {
        Value::Array(entries) => Ok(entries),
        Value::Object(mut obj) => match obj.remove("modems") {
            Some(Value::Array(entries)) => Ok(entries),
            _ => Err(ProxysmartError::malformed(
                "status is an object without a `modems` array",
            )),
        },
        other => Err(ProxysmartError::malformed(format!(
            "status is {}, not an array",
            kind(&other)
        ))),
    }
}

/// Normalises raw status entries into modems, skipping entries without a valid IMEI and
/// keeping the carrier from `previous` while the modem reports none.
pub fn normalize_modems(entries: &[Value], previous: &[Modem]) -> Vec<Modem> {
    let mut out: Vec<Modem> = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(mut modem) = normalize_modem(entry) else {
            continue;
        };
        if out.iter().any(|m| m.imei == modem.imei) {
            tracing::debug!(imei = %modem.imei, "duplicate IMEI in ProxySmart status; keeping the first");
            continue;
        }
        if modem.carrier.is_none() {
            modem.carrier = previous
                .iter()
                .find(|m| m.imei == modem.imei)
                .and_then(|m| m.carrier.clone());
        }
        out.push(modem);
    }
    out.sort_by(|a, b| a.imei.cmp(&b.imei));
    out
}

fn normalize_modem(entry: &Value) -> Option<Modem> {
    let details = entry.get("modem_details").unwrap_or(&Value::Null);
    let net = entry.get("net_details").unwrap_or(&Value::Null);
    let nick = text(details, "NICK").unwrap_or_default();
    if nick.to_ascii_lowercase().starts_with("random") {
        // A placeholder left when a port binding was deleted, whatever its IMEI field says.
        return None;
    }
    let imei = text(details, "IMEI").filter(|i| is_imei(i))?;
    let raw_ip = text(net, "EXT_IP").unwrap_or_default();
    let ext_ip = raw_ip.parse::<IpAddr>().ok().map(|ip| ip.to_string());
    let rotating = truthy(entry.get("IS_ROTATED")) || raw_ip == "IP_RESET";
    let present = |v: Option<String>| v.filter(|s| !s.is_empty());
    Some(Modem {
        imei,
        nick,
        carrier: text(net, "CELLOP")
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("unknown")),
        ext_ip,
        online: truthy(net.get("IS_ONLINE")),
        rotating,
        signal: text(net, "SIGNAL_STRENGTH").and_then(|s| leading_int(&s)),
        model: text(details, "MODEL_SHOWN")
            .filter(|m| !m.is_empty())
            .or_else(|| text(details, "MODEL"))
            .filter(|m| !m.is_empty()),
        iccid: present(text(net, "ICCID")),
        usb_id: present(text(details, "USB_ID")),
        dev: present(text(net, "DEV")),
        sim_status: present(text(net, "SimStatus")),
        redirect_imposed: net.get("HTTP_REDIRECT_IMPOSED").map(imposed),
        rebooting: entry.get("IS_REBOOTING").map(|v| truthy(Some(v))),
        network_type: present(text(net, "CurrentNetworkType"))
            .filter(|t| !t.eq_ignore_ascii_case("unknown")),
        auto_rotation_s: text(details, "AUTO_IP_ROTATION").map(|m| minutes_to_s(&m)),
    })
}

/// `HTTP_REDIRECT_IMPOSED`: anything but an empty/no/0/false/none/null value is a redirect.
fn imposed(v: &Value) -> bool {
    match as_text(v) {
        None => false,
        Some(t) => !matches!(
            t.to_ascii_lowercase().as_str(),
            "" | "no" | "null" | "0" | "false" | "none"
        ),
    }
}

/// `AUTO_IP_ROTATION` minutes ("" or unparsable = 0, off) as seconds.
fn minutes_to_s(minutes: &str) -> u64 {
    minutes
        .trim()
        .parse::<u64>()
        .unwrap_or(0)
        .saturating_mul(60)
}

/// `list_ports_json`: an object keyed by IMEI, each an array of ports (`[]` when empty).
pub fn parse_ports(body: &str) -> Result<Vec<PortEntry>, ProxysmartError> {
    let by_imei = match parse_json(body)? {
        Value::Object(obj) => obj,
        Value::Array(a) if a.is_empty() => return Ok(Vec::new()),
        other => {
            return Err(ProxysmartError::malformed(format!(
                "ports is {}, not an object",
                kind(&other)
            )))
        }
    };
    let mut out = Vec::new();
    for (imei, ports) in by_imei {
        let list: Vec<Value> = match ports {
            Value::Array(list) => list,
            Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
            Value::Null => Vec::new(),
            other => {
                return Err(ProxysmartError::malformed(format!(
                    "ports of a modem are {}",
                    kind(&other)
                )))
            }
        };
        out.extend(list.iter().filter_map(|p| port_entry(&imei, p)));
    }
    Ok(out)
}

fn port_entry(imei: &str, port: &Value) -> Option<PortEntry> {
    let port_id = text(port, "portID").filter(|id| !id.is_empty())?;
    Some(PortEntry {
        imei: imei.to_string(),
        port_id,
        port_name: text(port, "portName").unwrap_or_default(),
        http_port: text(port, "HTTP_PORT").and_then(|p| p.parse().ok()),
        socks_port: text(port, "SOCKS_PORT").and_then(|p| p.parse().ok()),
        login: text(port, "LOGIN").unwrap_or_default(),
        password: Masked::new(text(port, "PASSWORD").unwrap_or_default()),
        valid_before: text(port, "PROXY_VALID_BEFORE").unwrap_or_default(),
        created_at: text(port, "CREATED_AT").unwrap_or_default(),
        quota: text(port, "QUOTA").unwrap_or_default(),
        over_quota: truthy(port.get("IS_OVER_QUOTA")),
        expired: port.get("IS_EXPIRED").map(|v| truthy(Some(v))),
        bandlimin: text(port, "bandlimin"),
        bandlimout: text(port, "bandlimout"),
        bw_quota: text(port, "bw_quota"),
    })
}

/// `bandwidth_report_all`: an object keyed by port id (`[]` when the box has no ports).
/// The entries are returned raw: `counters` reads their counters one by one, so one odd
/// value costs that value, not the report.
pub fn parse_bandwidth_report(body: &str) -> Result<Map<String, Value>, ProxysmartError> {
    match parse_json(body)? {
        Value::Object(by_port) => Ok(by_port),
        Value::Array(a) if a.is_empty() => Ok(Map::new()),
        other => Err(ProxysmartError::malformed(format!(
            "bandwidth report is {}, not an object",
            kind(&other)
        ))),
    }
}

/// `get_free_tcp_ports`: a list of numbers or numeric strings, bare or inside an object.
pub fn parse_free_ports(body: &str) -> Result<Vec<u16>, ProxysmartError> {
    let value = parse_json(body)?;
    let list = match &value {
        Value::Array(list) => list.as_slice(),
        Value::Object(obj) => first_array(obj)
            .ok_or_else(|| ProxysmartError::malformed("free ports: object without a list"))?,
        other => {
            return Err(ProxysmartError::malformed(format!(
                "free ports is {}",
                kind(other)
            )))
        }
    };
    let ports: Vec<u16> = list
        .iter()
        .filter_map(|v| as_text(v)?.parse().ok())
        .filter(|p| *p > 0)
        .collect();
    if ports.len() < list.len() {
        return Err(ProxysmartError::malformed(
            "free ports: an entry is not a port number",
        ));
    }
    Ok(ports)
}

fn first_array(obj: &Map<String, Value>) -> Option<&[Value]> {
    if let Some(Value::Array(a)) = obj.get("ports").or_else(|| obj.get("data")) {
        return Some(a);
    }
    obj.values().find_map(|v| v.as_array().map(Vec::as_slice))
}

/// An action reply, in any form real boxes use (see [`ReplyForm`]); a reply that names an
/// error (`result` false/"error"/…, a refusal phrase, a bare `false`) is `Refused`, an HTML
/// page or unknown text `Malformed`.
pub fn parse_action(body: &str) -> Result<ReplyForm, ProxysmartError> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Ok(ReplyForm::Empty);
    }
    let value = match parse_json(trimmed) {
        Ok(value) => value,
        Err(e) => return bare_text(trimmed).unwrap_or(Err(e)),
    };
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Bool(true) => return Ok(ReplyForm::JsonBool),
        Value::String(text) => {
            return bare_text(&text).unwrap_or_else(|| {
                Err(ProxysmartError::malformed(
                    "action reply is an unknown string",
                ))
            })
        }
        other => return Err(refused_or_malformed(&other)),
    };
    let message = obj
        .get("message")
        .or_else(|| obj.get("MSG"))
        .and_then(as_text)
        .unwrap_or_default();
    let refused = |fallback: &str| {
        let message = if message.is_empty() {
            fallback.to_string()
        } else {
            short(&message)
        };
        Err(ProxysmartError::Refused { message })
    };
    match obj.get("result") {
        Some(Value::Bool(true)) => Ok(ReplyForm::JsonBool),
        Some(Value::Bool(false)) => refused("result: false"),
        Some(r) => match as_text(r) {
            Some(t) if t.eq_ignore_ascii_case("success") || t.eq_ignore_ascii_case("ok") => {
                Ok(ReplyForm::JsonResult)
            }
            Some(t) if t.eq_ignore_ascii_case("true") => Ok(ReplyForm::JsonBool),
            Some(t) => refused(&format!("result: {}", short(&t))),
            None => refused("result: null"),
        },
        None if is_refusal(&message) => refused(""),
        None => Ok(ReplyForm::JsonOther),
    }
}

/// A bare text reply: `OK`, `success` or `true` is success; a refusal phrase is a refusal.
fn bare_text(text: &str) -> Option<Result<ReplyForm, ProxysmartError>> {
    let lower = text.trim().to_ascii_lowercase();
    if matches!(lower.as_str(), "ok" | "success" | "true" | "done") {
        return Some(Ok(ReplyForm::TextOk));
    }
    if lower.len() < 200 && !lower.starts_with('<') && is_refusal(&lower) {
        return Some(Err(ProxysmartError::Refused {
            message: short(text.trim()),
        }));
    }
    None
}

fn refused_or_malformed(value: &Value) -> ProxysmartError {
    match value {
        Value::Bool(false) => ProxysmartError::Refused {
            message: "false".to_string(),
        },
        other => ProxysmartError::malformed(format!("action reply is {}", kind(other))),
    }
}

/// `show_single_status_json`: one status entry, given as an object or (on field boxes) as
/// an array of one.
pub fn parse_single_status(body: &str) -> Result<Value, ProxysmartError> {
    match parse_json(body)? {
        Value::Array(mut entries) if entries.len() == 1 => Ok(entries.remove(0)),
        Value::Array(entries) => Err(ProxysmartError::malformed(format!(
            "single status is an array of {}",
            entries.len()
        ))),
        Value::Object(obj) if obj.contains_key("result") && !obj.contains_key("modem_details") => {
            let message = obj.get("message").and_then(as_text).unwrap_or_default();
            Err(ProxysmartError::Refused {
                message: short(&message),
            })
        }
        obj @ Value::Object(_) => Ok(obj),
        other => Err(ProxysmartError::malformed(format!(
            "single status is {}",
            kind(&other)
        ))),
    }
}

/// Whether a ProxySmart message reads as a refusal.
pub fn is_refusal(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    REFUSAL_PHRASES.iter().any(|p| lower.contains(p))
}

pub use farmhand_protocol::is_imei;

fn text(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(as_text)
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::String(s)) => {
            matches!(s.trim().to_ascii_lowercase().as_str(), "yes" | "true" | "1")
        }
        _ => false,
    }
}

/// "-71", "23", "23%" or "23 dBm" → the leading integer.
fn leading_int(s: &str) -> Option<i32> {
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(s.len(), |(i, _)| i);
    s[..end].parse().ok()
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
