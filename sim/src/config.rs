//! Simulator configuration: how many modems, the box's admin credentials, rotation timing and
//! where the per-port proxies listen.

use super::quirks::Quirks;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// How long a `field` box's rotation shows "IP_RESET" (real ones: 5 to 60 s).
pub const FIELD_ROTATION_DELAY: Duration = Duration::from_secs(8);

/// Largest modem count: each modem needs a distinct documentation-range address.
pub const MAX_MODEMS: usize = 250;

/// How the simulated box looks at start.
#[derive(Clone)]
pub struct SimConfig {
    /// Number of real modems (1..=250); a phantom and a being-added entry come on top.
    pub modems: usize,
    /// Basic-auth user of the ProxySmart API.
    pub username: String,
    /// Basic-auth password of the ProxySmart API (never logged; `Debug` masks it).
    pub password: String,
    /// How long a rotation shows `EXT_IP: "IP_RESET"` before the new IP appears.
    pub rotation_delay: Duration,
    /// Address the per-port HTTP and SOCKS5 proxies bind to.
    pub proxy_ip: IpAddr,
    /// The box's zone, seconds east of UTC: `CREATED_AT` and the expiry check use box-local
    /// time without a zone, as real boxes do (0 = a box that runs on UTC).
    pub utc_offset_s: i32,
    /// `store_port` of an existing portID replaces the whole record, so the optional fields
    /// it leaves out (expiry, quota, speed limits) are cleared — the pessimistic reading of
    /// the spec. Off (default): a field left out keeps its value.
    pub store_port_replaces: bool,
    /// How this box departs from the classic reading of the API (default: not at all).
    pub quirks: Quirks,
    /// The modems are numbered from `first_modem` + 1 (IMEIs, nicks, IPs): a second box in
    /// the same test gets other IMEIs than the first.
    pub first_modem: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            modems: 4,
            username: "proxy".to_string(),
            password: "proxy".to_string(),
            rotation_delay: Duration::from_secs(2),
            proxy_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            utc_offset_s: 0,
            store_port_replaces: false,
            quirks: Quirks::default(),
            first_modem: 0,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("modems", &self.modems)
            .field("username", &self.username)
            .field("password", &"***")
            .field("rotation_delay", &self.rotation_delay)
            .field("proxy_ip", &self.proxy_ip)
            .field("utc_offset_s", &self.utc_offset_s)
            .field("store_port_replaces", &self.store_port_replaces)
            .field("quirks", &self.quirks.enabled())
            .finish()
    }
}

impl SimConfig {
    /// The `field` box: every quirk the evidence shows on live boxes ([`Quirks::field`]),
    /// with rotations as slow as theirs can be in a test's time (8 s).
    pub fn field() -> Self {
        SimConfig {
            quirks: Quirks::field(),
            rotation_delay: FIELD_ROTATION_DELAY,
            ..SimConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> io::Result<()> {
        if self.first_modem + self.modems > MAX_MODEMS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_MODEMS} simulated modems (first_modem + modems)"),
            ));
        }
        if self.username.is_empty() || self.username.contains(':') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "username must be non-empty and contain no ':'",
            ));
        }
        Ok(())
    }
}
