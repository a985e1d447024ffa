//! `POST /crud/store_port`: parse and validate the `data` JSON document, then create or
//! update the port (same portID = update). An update keeps the optional fields it leaves
//! out, or — `SimConfig::store_port_replaces`, the pessimistic box — clears them. Live
//! listeners only change on `apply_port`.
//!
//! A field box (`Quirks`) may store something else than it was asked: under an id of its
//! own, with credentials of its own, without the quota or expiry, the expiry to the minute —
//! or nothing at all, for a port whose HTTP and SOCKS numbers are not a matched pair. It
//! answers success either way; only reading the port list back tells.

use super::error::SimError;
use super::pools;
use super::state::{Counters, PortState, State};
use super::util;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A validated `store_port` request. Optional fields are `None` when absent (kept on
/// update, unless the box replaces whole records).
#[derive(Debug)]
pub(crate) struct PortInput {
    pub imei: String,
    pub port_id: String,
    pub port_name: String,
    pub login: String,
    pub password: String,
    pub http_port: u16,
    pub socks_port: u16,
    pub valid_before: Option<String>,
    pub quota: Option<String>,
    pub quota_type: Option<String>,
    pub quota_direction: Option<String>,
    pub bandlimin: Option<String>,
    pub bandlimout: Option<String>,
}

pub(crate) fn parse(data: &str) -> Result<PortInput, SimError> {
    let value: Value = serde_json::from_str(data)
        .map_err(|e| SimError::InvalidData(format!("data is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(SimError::InvalidData("data must be a JSON object".into()));
    };
    let valid_before = match optional_text(&obj, "PROXY_VALID_BEFORE") {
        Some(v) => Some(
            util::normalise_stamp(&v)
                .ok_or_else(|| SimError::InvalidData(format!("bad PROXY_VALID_BEFORE {v:?}")))?,
        ),
        None => None,
    };
    let input = PortInput {
        imei: required_text(&obj, "IMEI")?,
        port_id: required_text(&obj, "portID")?,
        port_name: optional_text(&obj, "portName").unwrap_or_default(),
        login: required_text(&obj, "proxy_login")?,
        password: required_text(&obj, "proxy_password")?,
        http_port: tcp_port(&obj, "http_port")?,
        socks_port: tcp_port(&obj, "socks_port")?,
        valid_before,
        quota: limit(&obj, "bw_quota")?,
        quota_type: optional_text(&obj, "QUOTA_TYPE"),
        quota_direction: optional_text(&obj, "QUOTA_DIRECTION"),
        bandlimin: limit(&obj, "bandlimin")?,
        bandlimout: limit(&obj, "bandlimout")?,
    };
    if input.http_port == input.socks_port {
        return Err(SimError::InvalidData(
            "http_port and socks_port must differ".into(),
        ));
    }
    if input.login.contains(':') {
        return Err(SimError::InvalidData(
            "proxy_login must not contain ':'".into(),
        ));
    }
    Ok(input)
}

fn optional_text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A limit: a non-negative integer (number or numeric string; "" or 0 = none). Anything
/// else is refused, as the box's form refuses it.
fn limit(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, SimError> {
    match optional_text(obj, key) {
        Some(v) if !v.is_empty() && v.parse::<u64>().is_err() => Err(SimError::InvalidData(
            format!("{key} must be a whole number, got {v:?}"),
        )),
        other => Ok(other),
    }
}

fn required_text(obj: &Map<String, Value>, key: &str) -> Result<String, SimError> {
    optional_text(obj, key)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SimError::InvalidData(format!("{key} is required")))
}

/// A TCP port given as a number (what clients send) or, leniently, a numeric string.
fn tcp_port(obj: &Map<String, Value>, key: &str) -> Result<u16, SimError> {
    let port = match obj.get(key) {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        _ => None,
    };
    port.filter(|p| *p != 0)
        .ok_or_else(|| SimError::InvalidData(format!("{key} must be a port number")))
}

/// What `store_port` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A new port, under this id.
    Created(String),
    /// An existing port changed.
    Updated(String),
    /// Nothing: the box dropped the port (and answered success).
    Dropped,
}

impl State {
    /// Creates or updates the port as this box does (see the module header).
    pub fn store_port(&mut self, mut input: PortInput, reserved: u16) -> Result<Stored, SimError> {
        if self.modem(&input.imei).is_none() {
            return Err(SimError::NoSuchModem);
        }
        let quirks = self.quirks.clone();
        let exists = self.ports.contains_key(&input.port_id);
        if quirks.drops_unmatched_pair && !pools::matched(input.http_port, input.socks_port) {
            tracing::info!(port_id = %input.port_id, "simulator: dropped a port whose ports are not a matched pair");
            return Ok(Stored::Dropped);
        }
        if quirks.assigns_port_id && !exists {
            input.port_id = format!("port{}", util::random_alnum(8));
        }
        if quirks.refuses_custom_credentials {
            match self.ports.get(&input.port_id) {
                Some(p) => (input.login, input.password) = (p.login.clone(), p.password.clone()),
                None => {
                    input.login = util::random_alnum(8);
                    input.password = util::random_alnum(12);
                }
            }
        }
        if quirks.drops_quota {
            (input.quota, input.quota_type, input.quota_direction) = (None, None, None);
        }
        if quirks.drops_expiry {
            input.valid_before = None;
        } else if quirks.expiry_minutes {
            input.valid_before = input.valid_before.map(|v| v.chars().take(16).collect());
        }
        self.delay_visibility(&input.port_id);
        let port_id = input.port_id.clone();
        self.store_as_asked(input, reserved)?;
        Ok(if exists {
            Stored::Updated(port_id)
        } else {
            Stored::Created(port_id)
        })
    }

    /// Creates or updates the port exactly as `input` says; returns true when created.
    pub fn store_as_asked(&mut self, input: PortInput, reserved: u16) -> Result<bool, SimError> {
        if self.modem(&input.imei).is_none() {
            return Err(SimError::NoSuchModem);
        }
        let used = self.used_tcp_ports(&input.port_id);
        for port in [input.http_port, input.socks_port] {
            if port == reserved || used.contains(&port) {
                return Err(SimError::PortInUse(port));
            }
        }
        let created = !self.ports.contains_key(&input.port_id);
        let replaces = self.store_port_replaces;
        let entry = self
            .ports
            .entry(input.port_id.clone())
            .or_insert_with(|| PortState {
                id: input.port_id.clone(),
                name: String::new(),
                imei: String::new(),
                http_port: 0,
                socks_port: 0,
                login: String::new(),
                password: String::new(),
                created_at: util::now_stamp(self.utc_offset_s),
                valid_before: String::new(),
                quota: String::new(),
                quota_type: String::new(),
                quota_direction: String::new(),
                bandlimin: String::new(),
                bandlimout: String::new(),
                owner: String::new(),
                reset_token: util::random_hex(16),
                applied: false,
                foreign: false,
                counters: Arc::new(Counters::default()),
            });
        if replaces {
            clear_optional(entry);
        }
        update(entry, input);
        Ok(created)
    }
}

/// What a box that replaces the whole record forgets when a re-store leaves it out. The
/// traffic counters and quota usage are the box's accounting, not the record: kept.
fn clear_optional(port: &mut PortState) {
    for field in [
        &mut port.valid_before,
        &mut port.quota,
        &mut port.quota_type,
        &mut port.quota_direction,
        &mut port.bandlimin,
        &mut port.bandlimout,
    ] {
        field.clear();
    }
}

fn update(port: &mut PortState, input: PortInput) {
    port.name = input.port_name;
    port.imei = input.imei;
    port.http_port = input.http_port;
    port.socks_port = input.socks_port;
    port.login = input.login;
    port.password = input.password;
    if let Some(v) = input.valid_before {
        port.valid_before = v;
    }
    if let Some(v) = input.quota {
        port.quota = v;
    }
    if let Some(v) = input.quota_type {
        port.quota_type = v;
    }
    if let Some(v) = input.quota_direction {
        port.quota_direction = v;
    }
    if let Some(v) = input.bandlimin {
        port.bandlimin = v;
    }
    if let Some(v) = input.bandlimout {
        port.bandlimout = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(extra: &str) -> String {
        format!(
            r#"{{"IMEI":"350000000000018","portID":"portabc","portName":"n","proxy_login":"u",
            "proxy_password":"p","http_port":8001,"socks_port":8002{extra}}}"#
        )
    }

    #[test]
    fn parses_a_complete_document() {
        let input = parse(&data(r#","PROXY_VALID_BEFORE":"2030-01-01T00:00""#)).unwrap();
        assert_eq!(input.http_port, 8001);
        assert_eq!(input.valid_before.as_deref(), Some("2030-01-01T00:00:00"));
        assert!(input.quota.is_none());
        let limited = parse(&data(
            r#","bw_quota":5,"QUOTA_TYPE":"lifetime","bandlimin":"800","bandlimout":800"#,
        ))
        .unwrap();
        assert_eq!(limited.quota.as_deref(), Some("5"));
        assert_eq!(limited.quota_type.as_deref(), Some("lifetime"));
        assert_eq!(limited.bandlimin.as_deref(), Some("800"));
        assert_eq!(limited.bandlimout.as_deref(), Some("800"));
    }

    #[test]
    fn rejects_bad_documents() {
        assert!(parse("not json").is_err());
        assert!(parse("[1]").is_err());
        assert!(parse(&data(r#","PROXY_VALID_BEFORE":"soon""#)).is_err());
        let same = data("").replace("8002", "8001");
        assert!(parse(&same).is_err());
        let no_login = data("").replace(r#""proxy_login":"u","#, "");
        assert!(parse(&no_login).is_err());
        let big = data("").replace("8002", "70000");
        assert!(parse(&big).is_err());
        assert!(parse(&data(r#","bw_quota":"lots""#)).is_err());
        assert!(parse(&data(r#","bandlimin":-5"#)).is_err());
        assert!(parse(&data(r#","bandlimout":1.5"#)).is_err());
    }
}
