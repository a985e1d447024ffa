//! The comparisons of `check`: limits in the request, quotas and expiries in every form a
//! box shows them, credentials and pairs.

use super::*;
use crate::base::masked::Masked;
use crate::boxside::ports::Want;
use crate::config::proxysmart::BoxUtcOffset;
use farmhand_protocol::Secret;

fn store(kbit: Option<u64>, mb: Option<u64>) -> StorePort {
    let mut store = StorePort {
        IMEI: "356000000000001".into(),
        portID: "port0123456789".into(),
        portName: "farmhand-al".into(),
        proxy_login: "u".into(),
        proxy_password: Secret::new("p"),
        http_port: 8001,
        socks_port: 5001,
        PROXY_VALID_BEFORE: "2031-01-01T10:00".into(),
        bandlimin: None,
        bandlimout: None,
        bw_quota: None,
        QUOTA_TYPE: None,
        QUOTA_DIRECTION: None,
    };
    apply_limits(
        &mut store,
        &PortLimits {
            bandwidth_kbit: kbit,
            traffic_quota_mb: mb,
        },
    );
    store
}

fn shown(quota: &str, bw_quota: Option<&str>, limits: Option<(&str, &str)>) -> PortEntry {
    PortEntry {
        imei: "356000000000001".into(),
        port_id: "port0123456789".into(),
        port_name: "farmhand-al".into(),
        http_port: Some(8001),
        socks_port: Some(5001),
        login: "u".into(),
        password: Masked::new("p"),
        valid_before: "2031-01-01T10:00:00".into(),
        created_at: String::new(),
        quota: quota.into(),
        over_quota: false,
        expired: None,
        bandlimin: limits.map(|l| l.0.to_string()),
        bandlimout: limits.map(|l| l.1.to_string()),
        bw_quota: bw_quota.map(str::to_string),
    }
}

fn limits(kbit: Option<u64>, mb: Option<u64>) -> PortLimits {
    PortLimits {
        bandwidth_kbit: kbit,
        traffic_quota_mb: mb,
    }
}

#[test]
fn limits_go_into_the_store_request_with_values_boxes_were_seen_to_take() {
    let s = store(Some(800), Some(500));
    assert_eq!(
        (s.bandlimin, s.bandlimout, s.bw_quota),
        (Some(800), Some(800), Some(500))
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["QUOTA_TYPE"], "monthly");
    assert_eq!(json["QUOTA_DIRECTION"], "inout");
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
fn the_quota_must_be_on_the_box_in_any_form_it_shows_it() {
    let asked = limits(None, Some(500));
    for ok in [
        "500",
        "500000000",
        "500 MB",
        "0.5 GB",
        "500.0MB",
        "476.8 MiB",
    ] {
        assert!(
            quota(&shown(ok, None, None), &asked).unwrap().is_ok(),
            "{ok:?}"
        );
    }
    assert!(
        quota(&shown("", Some("500"), None), &asked)
            .unwrap()
            .is_ok(),
        "field boxes show bw_quota with QUOTA empty"
    );
    for (q, bw) in [
        ("", None),
        ("50", None),
        ("5 GB", None),
        ("lots", None),
        ("", Some("0")),
    ] {
        let e = quota(&shown(q, bw, None), &asked).unwrap().unwrap_err();
        assert_eq!(e.code, CommandErrorCode::BoxRefusedField, "{q:?}");
        assert_eq!(e.field.as_deref(), Some("bw_quota"));
    }
    assert!(quota(&shown("", None, None), &limits(None, None)).is_none());
}

#[test]
fn speed_limits_are_checked_when_the_box_lists_them() {
    let asked = limits(Some(800), None);
    assert!(speed(&shown("", None, Some(("800", "800"))), &asked)
        .unwrap()
        .is_ok());
    assert!(
        speed(&shown("", None, None), &asked).is_none(),
        "not listed: unknown"
    );
    let e = speed(&shown("", None, Some(("800", ""))), &asked)
        .unwrap()
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("bandlimout"));
    let e = speed(&shown("", None, Some(("8000", "800"))), &asked)
        .unwrap()
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("bandlimin"));
}

#[test]
fn expiries_compare_as_times_in_every_form() {
    let written = "2031-01-01T10:00";
    for ok in [
        "2031-01-01T10:00",
        "2031-01-01T10:00:00",
        "2031-01-01T10:00:59",
        "2031-01-01T09:59:30",
        "2031-01-01 10:00:00",
        "2031-01-01",
        "2031-01-02",
    ] {
        assert!(expiry_matches(ok, written), "{ok}");
    }
    for bad in [
        "",
        "2031-01-01T10:02",
        "2031-01-01T09:58",
        "2031-01-03",
        "soon",
    ] {
        assert!(!expiry_matches(bad, written), "{bad}");
    }
}

#[test]
fn the_expiry_is_written_to_the_minute_rounded_up_in_box_time() {
    let utc = BoxClock::new(BoxUtcOffset::Fixed(0), None);
    // 2031-01-01T10:00:00Z and one second later.
    let at = 1_925_028_000_000;
    assert_eq!(box_expiry(&utc, at).unwrap(), "2031-01-01T10:00");
    assert_eq!(box_expiry(&utc, at + 1_000).unwrap(), "2031-01-01T10:01");
    let moscow = BoxClock::new(BoxUtcOffset::Fixed(3 * 3600), None);
    assert_eq!(box_expiry(&moscow, at).unwrap(), "2031-01-01T13:00");
}

#[test]
fn a_stored_expiry_that_differs_is_refused_but_none_at_all_is_not() {
    let s = store(None, None);
    assert!(expiry_only(&shown("", None, None), &s).is_ok());
    let mut none = shown("", None, None);
    none.valid_before.clear();
    assert!(
        expiry_only(&none, &s).is_ok(),
        "a box that keeps no expiry is noted, not refused"
    );
    let mut wrong = shown("", None, None);
    wrong.valid_before = "2031-01-01T12:00".into();
    let e = expiry_only(&wrong, &s).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("PROXY_VALID_BEFORE"));
}

#[test]
fn credentials_and_pairs() {
    let want = Want {
        imei: "356000000000001".into(),
        name: "farmhand-al".into(),
        login: "u".into(),
        password: Secret::new("p"),
        expires_at_ms: 0,
        limits: PortLimits::default(),
    };
    let port = shown("", None, None);
    assert!(credentials(&port, &want).is_ok());
    let mut other = port.clone();
    other.login = "boxmade".into();
    assert_eq!(
        credentials(&other, &want).unwrap_err().field.as_deref(),
        Some("proxy_login")
    );
    other.login = "u".into();
    other.password = Masked::new("boxmade");
    assert_eq!(
        credentials(&other, &want).unwrap_err().field.as_deref(),
        Some("proxy_password")
    );
    assert_eq!(pair(&port).unwrap(), (8001, 5001));
    let mut bad = port;
    bad.socks_port = Some(80);
    assert!(pair(&bad).is_err());
}

#[test]
fn a_re_store_must_show_what_it_wrote() {
    let s = store(Some(800), Some(500));
    assert!(stored_as(&shown("500", None, Some(("800", "800"))), &s).is_ok());
    assert!(
        stored_as(&shown("500", None, None), &s).is_ok(),
        "limits not listed"
    );
    let e = stored_as(&shown("", None, None), &s).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("bw_quota"));
    let mut moved = shown("500", None, None);
    moved.http_port = Some(8002);
    assert!(stored_as(&moved, &s).is_err());
}
