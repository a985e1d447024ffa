//! Snapshots of simulator state handed to tests by value (and served by `/_sim/state`).

use serde::Serialize;
use std::fmt;

/// One simulated modem as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimModem {
    /// 15-digit IMEI with a valid Luhn check digit.
    pub imei: String,
    /// Short name, e.g. "DE_1".
    pub nick: String,
    /// Shown model name.
    pub model: String,
    /// `CELLOP` (may be "" or "Unknown" when signal is lost).
    pub carrier: String,
    /// The modem's public IP; never "IP_RESET" (see `rotating`).
    pub ext_ip: String,
    /// `IS_ONLINE`.
    pub online: bool,
    /// True while a rotation is under way (the API shows `EXT_IP: "IP_RESET"`).
    pub rotating: bool,
    /// Completed rotations.
    pub rotations: u32,
    /// The next rotation will come back with the same IP.
    pub same_ip_next_rotation: bool,
    /// `SIGNAL_STRENGTH`.
    pub signal: String,
    /// `N`, the position in the status list.
    pub position: u32,
    /// `ICCID`: the SIM card's id.
    pub iccid: String,
    /// `USB_ID`: where the modem is plugged in.
    pub usb_id: String,
    /// `SimStatus`: "OK", or what is wrong with the SIM.
    pub sim_status: String,
    /// `HTTP_REDIRECT_IMPOSED`: the carrier shows its captive page (SIM out of credit).
    pub redirect_imposed: bool,
    /// `AUTO_IP_ROTATION`, minutes: the box rotates the modem by itself (0 = off).
    pub auto_rotation_min: u32,
    /// `IS_REBOOTING`.
    pub rebooting: bool,
    /// What its proxies do with a connection (a fault the API does not show).
    pub proxy: crate::PathFault,
    /// Where its proxies' traffic leaves from when not `ext_ip`.
    pub egress_ip: Option<String>,
    /// How long its proxies wait before answering a connection's first request.
    pub first_byte_delay_ms: u64,
}

/// One port (stored, maybe applied) as the simulator sees it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SimPort {
    /// `portID`.
    pub port_id: String,
    /// `portName`.
    pub port_name: String,
    /// IMEI of the modem it belongs to.
    pub imei: String,
    /// `HTTP_PORT`.
    pub http_port: u16,
    /// `SOCKS_PORT`.
    pub socks_port: u16,
    /// `LOGIN`.
    pub login: String,
    /// `PASSWORD` (clear text, as ProxySmart stores it; masked in `Debug`).
    pub password: String,
    /// `PROXY_VALID_BEFORE` ("" = none).
    pub valid_before: String,
    /// `QUOTA`: the traffic quota in MB as stored ("" = none).
    pub quota: String,
    /// Download speed limit in kbit/s as stored ("" = none).
    pub bandlimin: String,
    /// Upload speed limit in kbit/s as stored ("" = none).
    pub bandlimout: String,
    /// Listeners are running (possibly with credentials older than the stored ones).
    pub applied: bool,
    /// Created through the handle/admin API, not through `store_port`.
    pub foreign: bool,
    /// Bytes forwarded towards the client (download) since the last traffic reset.
    pub bytes_in: u64,
    /// Bytes forwarded towards the origin (upload) since the last traffic reset.
    pub bytes_out: u64,
    /// `IS_OVER_QUOTA`: the port's quota is used up and it refuses traffic.
    pub over_quota: bool,
}

impl fmt::Debug for SimPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPort")
            .field("port_id", &self.port_id)
            .field("port_name", &self.port_name)
            .field("imei", &self.imei)
            .field("http_port", &self.http_port)
            .field("socks_port", &self.socks_port)
            .field("login", &self.login)
            .field("password", &"***")
            .field("valid_before", &self.valid_before)
            .field("applied", &self.applied)
            .field("foreign", &self.foreign)
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .field("quota", &self.quota)
            .field("over_quota", &self.over_quota)
            .finish_non_exhaustive()
    }
}
