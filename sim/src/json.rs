//! ProxySmart's JSON quirks: string-typed numbers and booleans, the being-added and phantom
//! status entries, ports keyed by IMEI, human-readable byte counters that read null or 0.

use super::quirks::Quirks;
use super::state::{ModemState, PortState, State};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// `show_status_json`: the real modems with a phantom placeholder after the first one (to
/// catch clients that stop at the first odd entry) and a modem still being added at the end.
pub(crate) fn status_array(state: &State) -> Value {
    let mut entries: Vec<Value> = state
        .modems
        .iter()
        .map(|m| status_entry(m, &state.quirks))
        .collect();
    let next = entries.len() + 1;
    entries.insert(entries.len().min(1), phantom_entry(next));
    entries.push(adding_entry(next + 1));
    Value::Array(entries)
}

pub(crate) fn status_entry(m: &ModemState, quirks: &Quirks) -> Value {
    let shown_ip = match (m.rotating, m.online) {
        (true, _) => "IP_RESET",
        (false, true) => m.ip.as_str(),
        (false, false) => "",
    };
    let mut entry = json!({
        "modem_details": {
            "IMEI": m.imei,
            "NICK": m.nick,
            "MODEL": m.model,
            "MODEL_SHOWN": m.model_shown,
            "PHONE_NUMBER": m.phone,
            "UPTIME": "3 days, 4:05",
            "REBOOT_SCORE": 0,
            "AUTO_IP_ROTATION": m.auto_rotation_min.to_string(),
            "USB_ID": m.usb_id,
        },
        "net_details": {
            "IS_ONLINE": yes_no(m.online),
            "EXT_IP": shown_ip,
            "CELLOP": m.carrier,
            "SIGNAL_STRENGTH": if m.online { m.signal.as_str() } else { "0" },
            "ICCID": m.iccid,
            "SimStatus": m.sim_status,
            "DEV": m.dev,
            "HTTP_REDIRECT_IMPOSED": u8::from(m.redirect_imposed),
        },
        "IS_ROTATED": true_false(m.rotating),
        "IS_REBOOTING": true_false(m.rebooting),
        "STATE": "added",
        "OWNER": "",
        "N": m.position,
    });
    if quirks.rich_status {
        entry["OWNER"] = json!("proxy");
        entry["IS_LOCKED"] = json!("false");
        entry["MSGS"] = json!([]);
        entry["net_details"]["CurrentNetworkType"] = json!(if m.online { "LTE" } else { "" });
        entry["net_details"]["BAND"] = json!(if m.online { "B3" } else { "?" });
        entry["net_details"]["ConnectionStatus"] = json!(if m.online {
            "connected"
        } else {
            "disconnected"
        });
    }
    entry
}

/// A placeholder modem: NICK "random…", a USB path where the IMEI belongs.
fn phantom_entry(n: usize) -> Value {
    json!({
        "modem_details": {
            "IMEI": "1-4.3.1.1",
            "NICK": "random_4f1c",
            "MODEL": "",
            "MODEL_SHOWN": "",
            "PHONE_NUMBER": "",
            "UPTIME": "",
            "REBOOT_SCORE": 0,
            "AUTO_IP_ROTATION": "0",
            "USB_ID": "1-4.3.1.1",
        },
        "net_details": {
            "IS_ONLINE": "no", "EXT_IP": "", "CELLOP": "", "SIGNAL_STRENGTH": "0",
            "ICCID": "", "SimStatus": "", "DEV": "", "HTTP_REDIRECT_IMPOSED": 0,
        },
        "IS_ROTATED": "false",
        "IS_REBOOTING": "false",
        "STATE": "",
        "OWNER": "",
        "N": n,
    })
}

/// A modem still being added: no IMEI key at all.
fn adding_entry(n: usize) -> Value {
    json!({
        "modem_details": { "NICK": "", "MODEL": "", "USB_ID": "1-2.4" },
        "net_details": { "IS_ONLINE": "no", "EXT_IP": "", "CELLOP": "" },
        "IS_ROTATED": "false",
        "IS_REBOOTING": "false",
        "STATE": "adding",
        "OWNER": "",
        "N": n,
    })
}

/// `list_ports_json`: `{IMEI: [port, …]}` for modems that have ports.
/// Late writes (`Quirks::write_delay`) are not shown yet.
pub(crate) fn ports_by_imei(state: &mut State, base_url: &str, now: &str) -> Value {
    let quirks = state.quirks.clone();
    let mut out = serde_json::Map::new();
    for port in state.visible_ports() {
        let entry = out
            .entry(port.imei.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(port_entry(&port, base_url, now, &quirks));
        }
    }
    Value::Object(out)
}

fn port_entry(p: &PortState, base_url: &str, now: &str, quirks: &Quirks) -> Value {
    // Both timestamps share one zero-padded format (the expiry maybe only to the minute, a
    // prefix), so string order is time order.
    // A box that ignores its expiry does not flag it either.
    let expired =
        !quirks.ignores_expiry && !p.valid_before.is_empty() && p.valid_before.as_str() <= now;
    let mut entry = json!({
        "portID": p.id,
        "portName": p.name,
        "HTTP_PORT": p.http_port.to_string(),
        "SOCKS_PORT": p.socks_port.to_string(),
        "LOGIN": p.login,
        "PASSWORD": p.password,
        "CREATED_AT": p.created_at,
        "PROXY_VALID_BEFORE": p.valid_before,
        "IS_EXPIRED": u8::from(expired),
        "IS_OVER_QUOTA": u8::from(p.over_quota()),
        "QUOTA": p.quota,
        "bandlimin": p.bandlimin,
        "bandlimout": p.bandlimout,
        "OWNER": p.owner,
        "RESET_SECURE_LINK": {
            "URL": format!("{base_url}/apix/reset_ip_secure?hash=aes_ecb:{}", p.reset_token)
        },
    });
    if quirks.quota_as_bw_quota {
        entry["QUOTA"] = json!("");
        entry["bw_quota"] = match p.quota.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(0),
        };
    }
    if quirks.hides_speed_limits {
        if let Value::Object(map) = &mut entry {
            map.remove("bandlimin");
            map.remove("bandlimout");
        }
    }
    entry
}

/// `bandwidth_report_all` / `bandwidth_report_json` entry for one port. Day and month carry
/// the live counters (the number 0 when idle); yesterday reads null, the previous month
/// "0 B" — the forms a client meets around the nightly reset.
/// With `Quirks::field_counters` the previous month is `prevmonth_*` (null, as in production)
/// and `lifetime_*` carry totals that survive the nightly reset.
pub(crate) fn bandwidth_entry(p: &PortState, quirks: &Quirks) -> Value {
    let bytes_in = p.counters.bytes_in.load(Ordering::Relaxed);
    let bytes_out = p.counters.bytes_out.load(Ordering::Relaxed);
    if quirks.field_counters {
        let lifetime_in = p.counters.lifetime_in.load(Ordering::Relaxed);
        let lifetime_out = p.counters.lifetime_out.load(Ordering::Relaxed);
        return json!({
            "port": p.id,
            "portName": p.name,
            "bandwidth_bytes_day_in": counter(bytes_in),
            "bandwidth_bytes_day_out": counter(bytes_out),
            "bandwidth_bytes_yesterday_in": null,
            "bandwidth_bytes_yesterday_out": null,
            "bandwidth_bytes_month_in": counter(bytes_in),
            "bandwidth_bytes_month_out": counter(bytes_out),
            "bandwidth_bytes_prevmonth_in": null,
            "bandwidth_bytes_prevmonth_out": null,
            "bandwidth_bytes_lifetime_in": counter(lifetime_in),
            "bandwidth_bytes_lifetime_out": counter(lifetime_out),
        });
    }
    json!({
        "port": p.id,
        "portName": p.name,
        "bandwidth_bytes_day_in": counter(bytes_in),
        "bandwidth_bytes_day_out": counter(bytes_out),
        "bandwidth_bytes_yesterday_in": null,
        "bandwidth_bytes_yesterday_out": null,
        "bandwidth_bytes_month_in": counter(bytes_in),
        "bandwidth_bytes_month_out": counter(bytes_out),
        "bandwidth_bytes_premonth_in": "0 B",
        "bandwidth_bytes_premonth_out": "0 B",
    })
}

fn counter(bytes: u64) -> Value {
    if bytes == 0 {
        json!(0)
    } else {
        json!(human_bytes(bytes))
    }
}

/// Decimal units as ProxySmart prints them: "512 B", "1.2 KB", "21.1 GB" (1 GB = 10^9 B).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub(crate) fn success(message: &str) -> Value {
    json!({ "result": "success", "message": message })
}

/// The body of a successful action, as this box words it (`Quirks::mixed_replies`): the
/// documented `{"result":"success"}`, or the endpoint's own form on a field box.
pub(crate) fn success_body(quirks: &Quirks, endpoint: &str, message: &str) -> String {
    if !quirks.mixed_replies {
        return success(message).to_string();
    }
    match endpoint {
        "store_port" => String::new(),
        "apply_port" => json!({ "result": true }).to_string(),
        "purge_port" => "OK".to_string(),
        _ => success(message).to_string(),
    }
}

pub(crate) fn error(message: &str) -> Value {
    json!({ "result": "error", "message": message })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn true_false(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_decimal_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_200), "1.2 KB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(21_100_000_000), "21.1 GB");
    }

    #[test]
    fn status_has_phantom_and_adding_entries() {
        let state = State::new(
            super::super::seed::modems(3, false),
            std::time::Duration::ZERO,
        );
        let Value::Array(list) = status_array(&state) else {
            panic!("not an array")
        };
        assert_eq!(list.len(), 5);
        assert_eq!(list[1]["modem_details"]["NICK"], "random_4f1c");
        assert!(list[4]["modem_details"].get("IMEI").is_none());
        assert_eq!(list[0]["net_details"]["IS_ONLINE"], "yes");
        assert_eq!(list[0]["IS_ROTATED"], "false");
    }
}
