//! A port's limits — speed (`bandlimin`/`bandlimout`, kbit/s) and traffic quota
//! (`bw_quota`, MB, sent with `QUOTA_TYPE` "lifetime" and `QUOTA_DIRECTION` "in+out") — and
//! the check, after `store_port`, that the box took them. Set by `provision` and sent again
//! by `update_port` from the journal (`journal::PortLimits`): a box may clear what a
//! re-store of the port leaves out.
//!
//! The port list shows the quota as `QUOTA`: a plain number is read in MB (what was sent)
//! or, failing that, bytes; a number with a unit (`"500 MB"`) must match within display
//! rounding (2 %), in decimal or binary megabytes. An empty `QUOTA` when a quota was asked
//! for is a refusal: the buyer would get unlimited traffic. The speed limits are compared
//! when the box lists them; the documented port list does not, and then the agent can only
//! warn that it could not check.

use super::provision::refused;
use crate::journal::PortLimits;
use crate::proxysmart::{PortEntry, StorePort};
use crate::usage::parse::human_bytes;
use farmhand_protocol::CommandError;

/// `QUOTA_TYPE` sent with a quota: the allocation's whole traffic.
pub const QUOTA_TYPE: &str = "lifetime";
/// `QUOTA_DIRECTION` sent with a quota: downloads and uploads together.
pub const QUOTA_DIRECTION: &str = "in+out";
/// How far a quota shown with a unit may be from the one asked for (display rounding).
const TOLERANCE: f64 = 0.02;

/// Sets the limits on `store` (speed both ways; the quota with its type and direction).
pub fn apply(store: &mut StorePort, limits: &PortLimits) {
    store.bandlimin = limits.bandwidth_kbit;
    store.bandlimout = limits.bandwidth_kbit;
    store.bw_quota = limits.traffic_quota_mb;
    store.QUOTA_TYPE = limits.traffic_quota_mb.map(|_| QUOTA_TYPE);
    store.QUOTA_DIRECTION = limits.traffic_quota_mb.map(|_| QUOTA_DIRECTION);
}

/// Checks that the box took every limit `store` set (those it left out are not checked).
pub fn verify(port: &PortEntry, store: &StorePort) -> Result<(), CommandError> {
    if let Some(mb) = store.bw_quota {
        if !quota_matches(&port.quota, mb) {
            return Err(refused(format!(
                "the box did not take bw_quota {mb} MB for port {} (QUOTA shows {:?})",
                store.portID,
                shorten(&port.quota)
            )));
        }
    }
    for (field, asked, shown) in [
        ("bandlimin", store.bandlimin, &port.bandlimin),
        ("bandlimout", store.bandlimout, &port.bandlimout),
    ] {
        let Some(kbit) = asked else { continue };
        match shown {
            Some(shown) if shown.trim().parse::<u64>().ok() == Some(kbit) => {}
            Some(shown) => {
                return Err(refused(format!(
                    "the box did not take {field} {kbit} for port {} (shows {:?})",
                    store.portID,
                    shorten(shown)
                )))
            }
            None => tracing::warn!(
                port = %store.portID,
                field,
                "ProxySmart does not list speed limits; cannot check that the box took it"
            ),
        }
    }
    Ok(())
}

/// Whether `QUOTA` as shown is `mb` megabytes.
fn quota_matches(shown: &str, mb: u64) -> bool {
    let shown = shown.trim();
    if let Ok(n) = shown.parse::<u64>() {
        return n == mb || Some(n) == mb.checked_mul(1_000_000);
    }
    let Some(bytes) = human_bytes(shown) else {
        return false;
    };
    let close = |unit: f64| {
        let asked = mb as f64 * unit;
        (bytes as f64 - asked).abs() <= asked * TOLERANCE
    };
    close(1_000_000.0) || close(1_048_576.0)
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masked::Masked;
    use farmhand_protocol::{CommandErrorCode, Secret};

    fn store(kbit: Option<u64>, mb: Option<u64>) -> StorePort {
        let mut store = StorePort {
            IMEI: "356000000000001".into(),
            portID: "port0123456789".into(),
            portName: "farmhand-al".into(),
            proxy_login: "u".into(),
            proxy_password: Secret::new("p"),
            http_port: 8001,
            socks_port: 8002,
            PROXY_VALID_BEFORE: String::new(),
            bandlimin: None,
            bandlimout: None,
            bw_quota: None,
            QUOTA_TYPE: None,
            QUOTA_DIRECTION: None,
        };
        let limits = PortLimits {
            bandwidth_kbit: kbit,
            traffic_quota_mb: mb,
        };
        apply(&mut store, &limits);
        store
    }

    fn shown(quota: &str, limits: Option<(&str, &str)>) -> PortEntry {
        PortEntry {
            imei: "356000000000001".into(),
            port_id: "port0123456789".into(),
            port_name: "farmhand-al".into(),
            http_port: Some(8001),
            socks_port: Some(8002),
            login: "u".into(),
            password: Masked::new("p"),
            valid_before: String::new(),
            created_at: String::new(),
            quota: quota.into(),
            over_quota: false,
            bandlimin: limits.map(|l| l.0.to_string()),
            bandlimout: limits.map(|l| l.1.to_string()),
        }
    }

    #[test]
    fn limits_go_into_the_store_request_with_the_quota_kind() {
        let s = store(Some(800), Some(500));
        assert_eq!(
            (s.bandlimin, s.bandlimout, s.bw_quota),
            (Some(800), Some(800), Some(500))
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["QUOTA_TYPE"], "lifetime");
        assert_eq!(json["QUOTA_DIRECTION"], "in+out");
        let none = serde_json::to_value(store(None, None)).unwrap();
        for key in [
            "bandlimin",
            "bandlimout",
            "bw_quota",
            "QUOTA_TYPE",
            "QUOTA_DIRECTION",
        ] {
            assert!(none.get(key).is_none(), "{key} sent without a limit");
        }
    }

    #[test]
    fn the_quota_must_be_on_the_box() {
        let s = store(None, Some(500));
        for ok in [
            "500",
            "500000000",
            "500 MB",
            "0.5 GB",
            "500.0MB",
            "476.8 MiB",
        ] {
            assert!(verify(&shown(ok, None), &s).is_ok(), "{ok:?}");
        }
        for bad in ["", "50", "5 GB", "lots", "600 MB"] {
            let e = verify(&shown(bad, None), &s).unwrap_err();
            assert_eq!(e.code, CommandErrorCode::ProxysmartRefused, "{bad:?}");
            assert!(e.message.contains("bw_quota"), "{}", e.message);
        }
        // Without a quota asked for, whatever the box shows is not checked.
        assert!(verify(&shown("", None), &store(None, None)).is_ok());
    }

    #[test]
    fn speed_limits_are_checked_when_the_box_lists_them() {
        let s = store(Some(800), None);
        assert!(verify(&shown("", Some(("800", "800"))), &s).is_ok());
        assert!(
            verify(&shown("", None), &s).is_ok(),
            "not listed: a warning only"
        );
        let e = verify(&shown("", Some(("800", ""))), &s).unwrap_err();
        assert!(e.message.contains("bandlimout"), "{}", e.message);
        let e = verify(&shown("", Some(("8000", "800"))), &s).unwrap_err();
        assert!(e.message.contains("bandlimin"), "{}", e.message);
    }
}
