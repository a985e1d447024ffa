//! Fixture tests for every ProxySmart quirk the parsers must tolerate (and the garbage they
//! must refuse).

use super::*;

const STATUS: &str = include_str!("fixtures/status_array.json");
const PORTS: &str = include_str!("fixtures/ports.json");
const HTML: &str = include_str!("fixtures/maintenance.html");

fn modems(body: &str, previous: &[Modem]) -> Vec<Modem> {
    normalize_modems(&parse_status(body).unwrap(), previous)
}

#[test]
fn status_array_is_normalised_and_junk_entries_skipped() {
    let m = modems(STATUS, &[]);
    let imeis: Vec<&str> = m.iter().map(|m| m.imei.as_str()).collect();
    // No entry without IMEI, no phantom USB path, no duplicate, the numeric IMEI accepted.
    assert_eq!(
        imeis,
        [
            "356000000000001",
            "356000000000002",
            "356000000000003",
            "356000000000004"
        ]
    );
    let first = &m[0];
    assert_eq!(first.nick, "DE_1");
    assert_eq!(first.carrier.as_deref(), Some("Vodafone"));
    assert_eq!(first.ext_ip.as_deref(), Some("198.51.100.11"));
    assert!(first.online && !first.rotating);
    assert_eq!(first.signal, Some(23));
    assert_eq!(first.model.as_deref(), Some("Huawei E3372h"));
    assert!(m[3].online, "boolean IS_ONLINE accepted");
}

#[test]
fn rotating_modem_has_no_ip_and_is_flagged() {
    let m = modems(STATUS, &[]);
    let rot = &m[1];
    assert_eq!(rot.ext_ip, None, "IP_RESET is never an address");
    assert!(rot.rotating && !rot.online);
    assert_eq!(rot.signal, Some(-71));
}

#[test]
fn unknown_carrier_keeps_the_last_known_one() {
    let m = modems(STATUS, &[]);
    assert_eq!(m[2].carrier, None);
    assert_eq!(m[2].ext_ip, None, "empty EXT_IP is None");
    assert_eq!(m[2].signal, None);
    assert_eq!(m[2].model, None);
    let mut previous = m[2].clone();
    previous.carrier = Some("O2".into());
    let again = modems(STATUS, &[previous]);
    assert_eq!(again[2].carrier.as_deref(), Some("O2"));
}

#[test]
fn status_wrapped_in_modems_object_is_accepted() {
    let wrapped = format!(r#"{{"modems": {STATUS}}}"#);
    assert_eq!(modems(&wrapped, &[]), modems(STATUS, &[]));
}

#[test]
fn garbage_and_html_status_are_malformed() {
    for body in [
        HTML,
        "",
        "   ",
        "garbage",
        "{\"modems\": 3}",
        "42",
        "\"str\"",
        "{\"other\": []}",
        "[1,",
    ] {
        let err = parse_status(body).unwrap_err();
        assert!(
            matches!(err, ProxysmartError::Malformed { .. }),
            "{body:?} → {err:?}"
        );
    }
    assert!(parse_status(HTML).unwrap_err().to_string().contains("HTML"));
}

#[test]
fn ports_are_parsed_with_string_numbers() {
    let ports = parse_ports(PORTS).unwrap();
    assert_eq!(ports.len(), 3, "the entry without portID is skipped");
    let ours = ports.iter().find(|p| p.port_id == "portQcSp2e0Y").unwrap();
    assert_eq!(ours.imei, "356000000000001");
    assert_eq!(ours.port_name, "farmhand-al_1");
    assert_eq!((ours.http_port, ours.socks_port), (Some(8031), Some(5031)));
    assert_eq!(ours.login, "buyer1");
    assert_eq!(ours.password.expose(), "pw-one");
    assert_eq!(ours.valid_before, "2026-03-10T14:14:26");
    let bad = ports.iter().find(|p| p.port_id == "portBadNums").unwrap();
    assert_eq!((bad.http_port, bad.socks_port), (None, Some(5050)));
    assert!(
        !format!("{ports:?}").contains("pw-one"),
        "Debug hides port passwords"
    );
}

#[test]
fn empty_port_list_may_be_an_empty_array() {
    assert!(parse_ports("[]").unwrap().is_empty());
    assert!(parse_ports("{}").unwrap().is_empty());
    for body in [HTML, "[1]", "{\"356000000000001\": 5}", "nonsense"] {
        assert!(
            matches!(parse_ports(body), Err(ProxysmartError::Malformed { .. })),
            "{body}"
        );
    }
}

#[test]
fn quota_fields_of_a_port_are_read() {
    let body = r#"{"356000000000001": [{"portID": "p1", "QUOTA": "500", "IS_OVER_QUOTA": 1,
        "bandlimin": "800", "bandlimout": 800}, {"portID": "p2", "IS_OVER_QUOTA": "0"}]}"#;
    let ports = parse_ports(body).unwrap();
    assert_eq!(ports[0].quota, "500");
    assert!(ports[0].over_quota);
    assert_eq!(ports[0].bandlimin.as_deref(), Some("800"));
    assert_eq!(ports[0].bandlimout.as_deref(), Some("800"));
    assert_eq!((ports[1].quota.as_str(), ports[1].over_quota), ("", false));
    assert_eq!(ports[1].bandlimin, None);
}

#[test]
fn bandwidth_reports_are_objects_keyed_by_port() {
    let report =
        parse_bandwidth_report(r#"{"p1": {"bandwidth_bytes_day_in": "1.2 KB"}, "p2": null}"#)
            .unwrap();
    assert_eq!(report.len(), 2);
    assert_eq!(report["p1"]["bandwidth_bytes_day_in"], "1.2 KB");
    assert!(parse_bandwidth_report("[]").unwrap().is_empty());
    for body in [HTML, "[1]", "5", "nonsense", ""] {
        assert!(
            matches!(
                parse_bandwidth_report(body),
                Err(ProxysmartError::Malformed { .. })
            ),
            "{body}"
        );
    }
}

#[test]
fn free_ports_in_several_shapes() {
    assert_eq!(parse_free_ports("[8001, 8002]").unwrap(), [8001, 8002]);
    assert_eq!(
        parse_free_ports(r#"["8001","8002"]"#).unwrap(),
        [8001, 8002]
    );
    assert_eq!(parse_free_ports(r#"{"ports":[8001]}"#).unwrap(), [8001]);
    assert_eq!(
        parse_free_ports(r#"{"result":"success","free":[9000]}"#).unwrap(),
        [9000]
    );
    assert!(parse_free_ports("[]").unwrap().is_empty());
    for body in [HTML, r#"["x"]"#, "[70000]", "{}", "7"] {
        assert!(
            matches!(
                parse_free_ports(body),
                Err(ProxysmartError::Malformed { .. })
            ),
            "{body}"
        );
    }
}

#[test]
fn action_replies_in_every_form_real_boxes_use() {
    let accepted = [
        (
            r#"{"result":"success","message":"stored"}"#,
            ReplyForm::JsonResult,
        ),
        (r#"{"result":"OK"}"#, ReplyForm::JsonResult),
        (r#"{"result":true}"#, ReplyForm::JsonBool),
        (r#"{"result":"true"}"#, ReplyForm::JsonBool),
        ("true", ReplyForm::JsonBool),
        (r#"{"message":"port applied"}"#, ReplyForm::JsonOther),
        ("OK", ReplyForm::TextOk),
        ("ok\n", ReplyForm::TextOk),
        (r#""OK""#, ReplyForm::TextOk),
        ("", ReplyForm::Empty),
        ("  \n", ReplyForm::Empty),
    ];
    for (body, form) in accepted {
        assert_eq!(parse_action(body), Ok(form), "{body:?}");
    }
}

#[test]
fn a_reply_that_names_an_error_is_still_an_error() {
    let refused = [
        r#"{"result":"error","message":"modem is busy"}"#,
        r#"{"result":"failed"}"#,
        r#"{"result":false}"#,
        r#"{"result":null}"#,
        "false",
        r#"{"message":"Modem not available, restart the modem"}"#,
        r#"{"MSG":"WebApp is down"}"#,
        r#"{"message":"no such port"}"#,
        "modem is busy",
        r#""unable to apply""#,
    ];
    for body in refused {
        assert!(
            matches!(parse_action(body), Err(ProxysmartError::Refused { .. })),
            "{body}"
        );
    }
    let err = parse_action(r#"{"result":"error","message":"modem is busy"}"#).unwrap_err();
    assert_eq!(err.to_string(), "ProxySmart refused: modem is busy");
    for body in [HTML, "[]", "Traceback (most recent call last)", "42"] {
        assert!(
            matches!(parse_action(body), Err(ProxysmartError::Malformed { .. })),
            "{body}"
        );
    }
}

#[test]
fn single_status_as_an_object_or_an_array_of_one() {
    let entry = r#"{"modem_details":{"IMEI":"356000000000001"}}"#;
    for body in [entry.to_string(), format!("[{entry}]")] {
        let v = parse_single_status(&body).unwrap();
        assert_eq!(v["modem_details"]["IMEI"], "356000000000001");
    }
    assert!(matches!(
        parse_single_status(r#"{"result":"error","message":"no such modem"}"#),
        Err(ProxysmartError::Refused { .. })
    ));
    assert!(parse_single_status("[]").is_err());
    assert!(parse_single_status(HTML).is_err());
}

#[test]
fn field_status_fields_are_read_and_absent_ones_stay_absent() {
    let body = r#"[{"modem_details":{"IMEI":"35600000000001","NICK":"DE_1","AUTO_IP_ROTATION":"8","USB_ID":"1-1.2"},
        "net_details":{"IS_ONLINE":"yes","EXT_IP":"198.51.100.1","ICCID":"8949","SimStatus":"OK",
        "HTTP_REDIRECT_IMPOSED":"1","DEV":"modem4397","CurrentNetworkType":"LTE"},"IS_REBOOTING":"true"},
        {"modem_details":{"IMEI":"3560000000000101","NICK":"DE_2"},"net_details":{"IS_ONLINE":"yes",
        "HTTP_REDIRECT_IMPOSED":"no"}},
        {"modem_details":{"IMEI":"356000000000003","NICK":"random_77"},"net_details":{}}]"#;
    let m = modems(body, &[]);
    assert_eq!(
        m.len(),
        2,
        "14 and 16 digits accepted, a random… placeholder skipped"
    );
    let first = m.iter().find(|m| m.nick == "DE_1").unwrap();
    assert_eq!(first.imei, "35600000000001");
    assert_eq!(first.iccid.as_deref(), Some("8949"));
    assert_eq!(first.usb_id.as_deref(), Some("1-1.2"));
    assert_eq!(first.dev.as_deref(), Some("modem4397"));
    assert_eq!(first.sim_status.as_deref(), Some("OK"));
    assert_eq!(first.redirect_imposed, Some(true));
    assert_eq!(first.rebooting, Some(true));
    assert_eq!(first.network_type.as_deref(), Some("LTE"));
    assert_eq!(first.auto_rotation_s, Some(480));
    assert!(first.unsellable_reason().is_some(), "SIM out of credit");
    let second = m.iter().find(|m| m.nick == "DE_2").unwrap();
    assert_eq!(second.redirect_imposed, Some(false));
    assert_eq!(
        (
            second.iccid.as_ref(),
            second.auto_rotation_s,
            second.rebooting
        ),
        (None, None, None),
        "absent fields are never invented"
    );
    assert!(second.unsellable_reason().is_none());
}

#[test]
fn imei_validation() {
    for good in ["356000000000001", "35600000000000", "3560000000000011"] {
        assert!(is_imei(good), "{good}");
    }
    for bad in [
        "",
        "3560000000000",
        "35600000000000111",
        "1-4.3.1.1",
        "35600000000000a",
    ] {
        assert!(!is_imei(bad), "{bad}");
    }
}
