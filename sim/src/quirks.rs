//! How a simulated box departs from the first, simple reading of the ProxySmart API: one
//! switch per behaviour that operators running real boxes report (spec
//! `proxysmart-api.md`, "Second look"), and the `field` preset that turns on every one the
//! evidence shows on the boxes it was seen on. Every switch off is the `classic` box.

use std::fmt;
use std::time::Duration;

/// The quirks of one simulated box (`Default` = none: the classic box).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Action replies on success differ by endpoint, as on real boxes: `store_port` answers
    /// an empty body, `apply_port` `{"result":true}`, `purge_port` a bare `OK`, a rotation
    /// `{"result":"success",…}`. Errors still name themselves.
    pub mixed_replies: bool,
    /// Writes (store, update, purge) reach `list_ports_json` this long after they are made
    /// (operators re-read three times 250 ms apart, and again over ~1.5 s after apply).
    pub write_delay: Duration,
    /// `get_free_tcp_ports` lists ports from two pools, HTTP 8001–8999 and SOCKS 5001–5999.
    pub port_pools: bool,
    /// `store_port` answers success but drops a port whose HTTP and SOCKS numbers are not a
    /// matched pair (8029 goes with 5029).
    pub drops_unmatched_pair: bool,
    /// A new port is stored under an id the box makes up (`portXXXXXXXX`); the caller's id
    /// is unknown to the box (apply answers 404).
    pub assigns_port_id: bool,
    /// The box keeps credentials of its own instead of the caller's login and password.
    pub refuses_custom_credentials: bool,
    /// `bw_quota` is accepted and ignored: no quota is stored or enforced.
    pub drops_quota: bool,
    /// `PROXY_VALID_BEFORE` is accepted and ignored: the port never expires on the box.
    pub drops_expiry: bool,
    /// The expiry is kept and shown, but never enforced: `IS_EXPIRED` stays 0 and the port
    /// keeps serving after it.
    pub ignores_expiry: bool,
    /// The port list shows the quota as `bw_quota` (a number) while `QUOTA` stays "".
    pub quota_as_bw_quota: bool,
    /// The expiry is kept and shown to the minute (`YYYY-MM-DDTHH:MM`).
    pub expiry_minutes: bool,
    /// The port list does not show the speed limits (`bandlimin`/`bandlimout`).
    pub hides_speed_limits: bool,
    /// `/crud/store_port` is not there (404): ports are made through the `/conf/add_port`
    /// form, whose save answers 302 whether it took the port or not.
    pub no_json_write: bool,
    /// `/conf/*` needs the web-panel login (`POST /modem/login`, a `session` cookie) on top
    /// of Basic auth.
    pub panel_login: bool,
    /// The first rotation request for each modem answers "modem is busy"; clients retry.
    pub busy_first_reset: bool,
    /// `show_single_status_json` answers an array of one, and takes an IMEI as `arg` too.
    pub single_status_array: bool,
    /// The second modem reports a 14-digit IMEI (no check digit), the third a 16-digit one
    /// (IMEISV).
    pub odd_imeis: bool,
    /// `bandwidth_report_all` has `prevmonth_*` (null) and `lifetime_*` totals that survive
    /// the nightly reset.
    pub field_counters: bool,
    /// Status entries carry what live boxes show beyond the documented fields: `OWNER`
    /// "proxy", `CurrentNetworkType`, `BAND`, `ConnectionStatus`, `IS_LOCKED`, `MSGS`.
    pub rich_status: bool,
}

/// Every switch by name, for the binary's `--quirk` and the admin interface.
pub const NAMES: [&str; 19] = [
    "mixed_replies",
    "write_delay",
    "port_pools",
    "drops_unmatched_pair",
    "assigns_port_id",
    "refuses_custom_credentials",
    "drops_quota",
    "drops_expiry",
    "ignores_expiry",
    "quota_as_bw_quota",
    "expiry_minutes",
    "hides_speed_limits",
    "no_json_write",
    "panel_login",
    "busy_first_reset",
    "single_status_array",
    "odd_imeis",
    "field_counters",
    "rich_status",
];

/// The write delay `write_delay` turns on by name, and the `field` preset's.
pub const FIELD_WRITE_DELAY: Duration = Duration::from_millis(750);

/// An unknown quirk or profile name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownQuirk(pub String);

impl fmt::Display for UnknownQuirk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown quirk {:?}; known: {}", self.0, NAMES.join(", "))
    }
}

impl std::error::Error for UnknownQuirk {}

impl Quirks {
    /// What the evidence shows on live boxes (the `field` profile): every switch but those
    /// seen only on some boxes (`refuses_custom_credentials`, `no_json_write`,
    /// `panel_login`) or never seen at all (`drops_quota`, `drops_expiry`,
    /// `ignores_expiry`).
    pub fn field() -> Self {
        Quirks {
            mixed_replies: true,
            write_delay: FIELD_WRITE_DELAY,
            port_pools: true,
            drops_unmatched_pair: true,
            assigns_port_id: true,
            refuses_custom_credentials: false,
            drops_quota: false,
            drops_expiry: false,
            ignores_expiry: false,
            quota_as_bw_quota: true,
            expiry_minutes: true,
            hides_speed_limits: true,
            no_json_write: false,
            panel_login: false,
            busy_first_reset: true,
            single_status_array: true,
            odd_imeis: true,
            field_counters: true,
            rich_status: true,
        }
    }

    /// A named profile: `classic` (no quirks) or `field`.
    pub fn profile(name: &str) -> Result<Self, UnknownQuirk> {
        match name {
            "classic" => Ok(Quirks::default()),
            "field" => Ok(Quirks::field()),
            other => Err(UnknownQuirk(format!("profile {other}"))),
        }
    }

    /// Turns one switch on by name (`write_delay` to [`FIELD_WRITE_DELAY`]).
    pub fn enable(&mut self, name: &str) -> Result<(), UnknownQuirk> {
        let flag = match name {
            "mixed_replies" => &mut self.mixed_replies,
            "write_delay" => {
                self.write_delay = FIELD_WRITE_DELAY;
                return Ok(());
            }
            "port_pools" => &mut self.port_pools,
            "drops_unmatched_pair" => &mut self.drops_unmatched_pair,
            "assigns_port_id" => &mut self.assigns_port_id,
            "refuses_custom_credentials" => &mut self.refuses_custom_credentials,
            "drops_quota" => &mut self.drops_quota,
            "drops_expiry" => &mut self.drops_expiry,
            "ignores_expiry" => &mut self.ignores_expiry,
            "quota_as_bw_quota" => &mut self.quota_as_bw_quota,
            "expiry_minutes" => &mut self.expiry_minutes,
            "hides_speed_limits" => &mut self.hides_speed_limits,
            "no_json_write" => &mut self.no_json_write,
            "panel_login" => &mut self.panel_login,
            "busy_first_reset" => &mut self.busy_first_reset,
            "single_status_array" => &mut self.single_status_array,
            "odd_imeis" => &mut self.odd_imeis,
            "field_counters" => &mut self.field_counters,
            "rich_status" => &mut self.rich_status,
            other => return Err(UnknownQuirk(other.to_string())),
        };
        *flag = true;
        Ok(())
    }

    /// The names of the switches that are on.
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut probe = Quirks::default();
        let mut on = Vec::new();
        for name in NAMES {
            probe.enable(name).ok();
            if self.includes(&probe) {
                on.push(name);
            }
            probe = Quirks::default();
        }
        on
    }

    /// Whether every switch on in `other` is on here.
    fn includes(&self, other: &Quirks) -> bool {
        let pairs = [
            (self.mixed_replies, other.mixed_replies),
            (!self.write_delay.is_zero(), !other.write_delay.is_zero()),
            (self.port_pools, other.port_pools),
            (self.drops_unmatched_pair, other.drops_unmatched_pair),
            (self.assigns_port_id, other.assigns_port_id),
            (
                self.refuses_custom_credentials,
                other.refuses_custom_credentials,
            ),
            (self.drops_quota, other.drops_quota),
            (self.drops_expiry, other.drops_expiry),
            (self.ignores_expiry, other.ignores_expiry),
            (self.quota_as_bw_quota, other.quota_as_bw_quota),
            (self.expiry_minutes, other.expiry_minutes),
            (self.hides_speed_limits, other.hides_speed_limits),
            (self.no_json_write, other.no_json_write),
            (self.panel_login, other.panel_login),
            (self.busy_first_reset, other.busy_first_reset),
            (self.single_status_array, other.single_status_array),
            (self.odd_imeis, other.odd_imeis),
            (self.field_counters, other.field_counters),
            (self.rich_status, other.rich_status),
        ];
        pairs.iter().all(|(mine, theirs)| *mine || !*theirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_turns_on_one_switch_and_is_listed_back() {
        for name in NAMES {
            let mut q = Quirks::default();
            q.enable(name).unwrap();
            assert_ne!(q, Quirks::default(), "{name} changed nothing");
            assert_eq!(q.enabled(), vec![name]);
        }
        assert!(Quirks::default().enable("explode").is_err());
    }

    #[test]
    fn profiles() {
        assert_eq!(Quirks::profile("classic").unwrap(), Quirks::default());
        let field = Quirks::profile("field").unwrap();
        assert!(field.enabled().len() >= 12, "{:?}", field.enabled());
        for off in [
            "refuses_custom_credentials",
            "no_json_write",
            "panel_login",
            "drops_quota",
            "drops_expiry",
            "ignores_expiry",
        ] {
            assert!(!field.enabled().contains(&off), "{off}");
        }
        assert!(Quirks::profile("real").is_err());
    }
}
