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
    /// The seller's cap on marketplace ports per modem (`[policy] max_ports_per_modem`),
    /// for every modem of this box; `None` (absent on the wire) = no seller cap. The plane
    /// counts a modem available only below min(its own capacity, this), so it does not
    /// offer slots the agent would refuse with `policy_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ports_per_modem: Option<u32>,
    /// What this box was seen to honour (absent from agents older than the field: all
    /// unknown). Changes later in the session come as `capabilities` messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<BoxCapabilities>,
    /// The seller's policy forbids the plane to probe this box's ports (`[policy] probes =
    /// false`): they are not fetched through, and not judged. Absent (false) = allowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probes_refused: bool,
}

/// What a box was seen to take when the agent wrote a port and read it back (its box
/// profile). `None` = not known yet; the plane treats unknown as "may work" (the agent
/// verifies every write anyway) and `Some(false)` as "do not send it orders that need it".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxCapabilities {
    /// A traffic quota (`bw_quota`) is stored.
    #[serde(default)]
    pub quota: Option<bool>,
    /// A speed limit (`bandlimin`/`bandlimout`) is stored (`None` also when the box does
    /// not list limits, so they cannot be checked).
    #[serde(default)]
    pub speed_limit: Option<bool>,
    /// The port expiry (`PROXY_VALID_BEFORE`) is stored.
    #[serde(default)]
    pub expiry: Option<bool>,
    /// The box flags (and stops) a port once its expiry has passed; `false`: it still
    /// showed an expired port as not expired, so only the plane's release ends it on time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforces_expiry: Option<bool>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `ICCID`: the SIM card in the modem (a new one means the SIM was swapped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    /// `USB_ID`: where the modem is plugged in (a new one means it was re-plugged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb_id: Option<String>,
    /// `DEV`: the box's device name for the modem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// `SimStatus` as the box reports it ("OK" when the SIM is fine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_status: Option<String>,
    /// `HTTP_REDIRECT_IMPOSED`: the carrier redirects to its captive page — usually a SIM
    /// out of credit. Such a modem carries no buyer traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_imposed: Option<bool>,
    /// `IS_REBOOTING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebooting: Option<bool>,
    /// `CurrentNetworkType`, e.g. "LTE".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_type: Option<String>,
    /// `AUTO_IP_ROTATION` in seconds: the BOX rotates this modem's IP by itself that often
    /// (0 = it does not). Buyers and the rotation spacing must take it into account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rotation_s: Option<u64>,
}

/// Whether `s` is an IMEI as boxes report them: 14 to 16 ASCII digits (an IMEI with or
/// without its check digit, or an IMEISV). USB-path placeholders ("1-4.3.1.1") are not.
pub fn is_imei(s: &str) -> bool {
    (14..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// `SimStatus` values that mean the SIM cannot carry traffic (as live clients read them).
const DEAD_SIM: [&str; 7] = [
    "undetect",
    "absent",
    "not insert",
    "notinsert",
    "fail",
    "error",
    "no sim",
];

impl Modem {
    /// Why this modem cannot be sold even while online, if it cannot: the one rule both the
    /// agent (to tell the seller) and the plane (to place nothing there) apply.
    pub fn unsellable_reason(&self) -> Option<&'static str> {
        if self.redirect_imposed == Some(true) {
            return Some("the carrier redirects to its captive page (SIM out of credit?)");
        }
        let status = self.sim_status.as_deref()?.to_ascii_lowercase();
        DEAD_SIM
            .iter()
            .any(|dead| status.contains(dead))
            .then_some("the SIM is not usable (SimStatus)")
    }
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

#[cfg(test)]
mod tests {
    use crate::{decode, encode, AgentMessage, DEFAULT_MAX_FRAME_BYTES};

    /// An inventory exactly as an agent without a seller cap (or one older than the field)
    /// sends it.
    const WITHOUT_CAP: &str = r#"{"type":"inventory","site":{"public_host":"203.0.113.7","country":"DE"},"proxysmart_reachable":true,"modems":[{"imei":"350000000000018","nick":"DE_1","carrier":"Vodafone","ext_ip":"198.51.100.11","online":true,"rotating":false,"signal":23,"model":null}],"ports":[]}"#;

    fn parse(text: &str) -> AgentMessage {
        decode(text, DEFAULT_MAX_FRAME_BYTES).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn an_inventory_without_the_seller_cap_parses_and_is_sent_unchanged() {
        let AgentMessage::Inventory(inventory) = parse(WITHOUT_CAP) else {
            panic!("not an inventory");
        };
        assert_eq!(inventory.max_ports_per_modem, None);
        assert_eq!(inventory.modems.len(), 1);
        // No cap: the frame is byte for byte what it was before the field existed.
        assert_eq!(encode(&AgentMessage::Inventory(inventory)), WITHOUT_CAP);
    }

    #[test]
    fn an_inventory_with_the_seller_cap_round_trips() {
        let AgentMessage::Inventory(mut inventory) = parse(WITHOUT_CAP) else {
            panic!("not an inventory");
        };
        inventory.max_ports_per_modem = Some(2);
        let message = AgentMessage::Inventory(inventory);
        let text = encode(&message);
        assert!(
            text.ends_with(r#""ports":[],"max_ports_per_modem":2}"#),
            "{text}"
        );
        assert_eq!(parse(&text), message);
        for bad in [
            r#""max_ports_per_modem":-1"#,
            r#""max_ports_per_modem":"2""#,
        ] {
            let text = WITHOUT_CAP.replace(r#""ports":[]"#, &format!(r#""ports":[],{bad}"#));
            assert!(decode::<AgentMessage>(&text, 4096).is_err(), "{text}");
        }
    }
}
