//! What an agent reports about its box: the site, the modems and the ports it manages.

use serde::{Deserialize, Serialize};

/// The full inventory of one box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Where the box is and how buyers reach it.
    pub site: Site,
    /// False while ProxySmart cannot be read; `modems` then holds the last known state and
    /// must not be taken as "all modems gone".
    pub proxysmart_reachable: bool,
    /// Every modem with a valid IMEI.
    pub modems: Vec<Modem>,
    /// The ports this agent created and still manages.
    pub ports: Vec<ManagedPort>,
}

/// Seller-configured labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Host name or IP that buyers connect to.
    pub public_host: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// City label, free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// One modem, normalised from ProxySmart's string-typed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modem {
    /// 15-digit IMEI.
    pub imei: String,
    /// ProxySmart's short name for the modem.
    pub nick: String,
    /// Operator name; the last known one is kept while signal is lost.
    pub carrier: Option<String>,
    /// Current public IP; `None` while unknown or rotating.
    pub ext_ip: Option<String>,
    /// Whether ProxySmart reports the modem online.
    pub online: bool,
    /// A rotation is in progress.
    pub rotating: bool,
    /// Signal strength as ProxySmart reports it, when it is a number.
    pub signal: Option<i32>,
    /// Modem model.
    pub model: Option<String>,
}

/// A port this agent manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedPort {
    /// The allocation it serves.
    pub allocation_id: String,
    /// The modem it is on.
    pub imei: String,
    /// ProxySmart's port id.
    pub port_id: String,
    /// HTTP proxy port.
    pub http_port: u16,
    /// SOCKS5 proxy port.
    pub socks_port: u16,
}

/// A change report: modems that appeared or changed, and IMEIs that disappeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemsChanged {
    /// Whether ProxySmart is currently readable.
    pub proxysmart_reachable: bool,
    /// New or changed modems, in full.
    pub changed: Vec<Modem>,
    /// IMEIs no longer present.
    pub removed: Vec<String>,
}
