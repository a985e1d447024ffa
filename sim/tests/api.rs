//! ProxySmart API surface of the simulator: auth, content type, shapes and string-typed
//! fields, skipped entries, store/apply/purge replies, free ports, counters, rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn api_requires_basic_auth() {
    let b = start_box(2).await;
    for path in [
        "/apix/show_status_json",
        "/apix/list_ports_json",
        "/modem/anything",
        "/crud/store_port",
    ] {
        let none = b.get_as(path, None).await;
        assert_eq!(none.status, 401, "{path} without auth");
        let wrong = b.get_as(path, Some((USER, "nope"))).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong password");
    }
    let resp = b
        .client
        .get(b.url("/apix/show_status_json"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(
        b.sim.api_calls("/apix/show_status_json"),
        0,
        "unauthenticated calls must not count"
    );
    let ok = b.get("/apix/show_status_json").await;
    assert_eq!(ok.status, 200);
    assert!(
        ok.content_type.starts_with("text/html"),
        "JSON is served as {}",
        ok.content_type
    );
    assert_eq!(b.sim.api_calls("/apix/show_status_json"), 1);
    b.sim.reset_counters();
    assert_eq!(b.sim.api_calls("/apix/show_status_json"), 0);
}

fn real_modems(status: &Value) -> Vec<&Value> {
    status
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            let imei = m["modem_details"]["IMEI"].as_str().unwrap_or_default();
            imei.len() == 15 && imei.bytes().all(|b| b.is_ascii_digit())
        })
        .collect()
}

#[tokio::test]
async fn status_has_the_documented_shape() {
    let b = start_box(4).await;
    let status = b.get_json("/apix/show_status_json").await;
    let all = status.as_array().unwrap();
    assert_eq!(all.len(), 6, "4 modems + a phantom + one being added");
    assert!(
        all.iter().any(|m| m["modem_details"].get("IMEI").is_none()),
        "an entry without IMEI"
    );
    assert!(all.iter().any(|m| {
        m["modem_details"]["NICK"]
            .as_str()
            .unwrap()
            .starts_with("random")
            && m["modem_details"]["IMEI"] == "1-4.3.1.1"
    }));
    let real = real_modems(&status);
    assert_eq!(real.len(), 4);
    let imeis: Vec<String> = real
        .iter()
        .map(|m| m["modem_details"]["IMEI"].as_str().unwrap().into())
        .collect();
    assert_eq!(imeis, b.sim.imeis());
    let carriers: Vec<&str> = real
        .iter()
        .map(|m| m["net_details"]["CELLOP"].as_str().unwrap())
        .collect();
    assert_eq!(carriers, ["Vodafone", "Telekom", "O2", "Vodafone"]);
    let ips: HashSet<&str> = real
        .iter()
        .map(|m| m["net_details"]["EXT_IP"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 4, "distinct external IPs");
    let m = real[0];
    assert_eq!(m["modem_details"]["NICK"], "DE_1");
    for key in [
        "MODEL",
        "MODEL_SHOWN",
        "PHONE_NUMBER",
        "UPTIME",
        "AUTO_IP_ROTATION",
        "USB_ID",
    ] {
        assert!(m["modem_details"][key].is_string(), "{key} is a string");
    }
    assert!(m["modem_details"]["REBOOT_SCORE"].is_number());
    assert_eq!(m["net_details"]["IS_ONLINE"], "yes");
    assert!(m["net_details"]["SIGNAL_STRENGTH"].is_string());
    for key in ["ICCID", "SimStatus", "DEV"] {
        assert!(m["net_details"][key].is_string(), "{key} is a string");
    }
    assert!(m["net_details"]["HTTP_REDIRECT_IMPOSED"].is_number());
    assert_eq!(m["IS_ROTATED"], "false");
    assert_eq!(m["IS_REBOOTING"], "false");
    assert_eq!(m["STATE"], "added");
    assert!(m["N"].is_number());

    let single = b.get_json("/apix/show_single_status_json?arg=DE_2").await;
    assert_eq!(single["modem_details"]["IMEI"], b.sim.imeis()[1]);
    let unknown = b.get_json("/apix/show_single_status_json?arg=NOPE").await;
    assert_eq!(unknown["result"], "error");
}

#[tokio::test]
async fn store_port_creates_updates_and_lists() {
    let b = start_box(2).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    assert_eq!(free.len(), 10);
    let mut doc = port_doc(&imei, "portA1b2c3d4e5", "buyer1", "pw1", free[0], free[1]);
    doc["PROXY_VALID_BEFORE"] = "2000-01-01T00:00:00".into();
    let created = b.store_port(&doc).await;
    assert_eq!(created["result"], "success", "{created}");
    assert!(created["message"].is_string());

    let ports = b.get_json("/apix/list_ports_json").await;
    let list = ports[&imei].as_array().expect("ports keyed by IMEI");
    assert_eq!(list.len(), 1);
    let p = &list[0];
    assert_eq!(p["portID"], "portA1b2c3d4e5");
    assert_eq!(p["HTTP_PORT"], free[0].to_string(), "ports are strings");
    assert_eq!(p["SOCKS_PORT"], free[1].to_string());
    assert_eq!(p["LOGIN"], "buyer1");
    assert_eq!(p["PASSWORD"], "pw1");
    assert_eq!(p["PROXY_VALID_BEFORE"], "2000-01-01T00:00:00");
    assert_eq!(p["IS_EXPIRED"], 1, "expiry in the past");
    assert_eq!(p["IS_OVER_QUOTA"], 0);
    let created_at = p["CREATED_AT"].as_str().unwrap();
    assert_eq!(created_at.len(), 19, "no zone: {created_at}");
    assert_eq!(&created_at[10..11], "T");
    assert!(p["RESET_SECURE_LINK"]["URL"]
        .as_str()
        .unwrap()
        .starts_with("http://"));

    doc["proxy_password"] = "pw2".into();
    doc["PROXY_VALID_BEFORE"] = "".into();
    assert_eq!(b.store_port(&doc).await["result"], "success");
    let ports = b.get_json("/apix/list_ports_json").await;
    assert_eq!(
        ports[&imei].as_array().unwrap().len(),
        1,
        "same portID updates"
    );
    assert_eq!(ports[&imei][0]["PASSWORD"], "pw2");
    assert_eq!(ports[&imei][0]["IS_EXPIRED"], 0);
    let sim_port = b.sim.port("portA1b2c3d4e5").unwrap();
    assert!(!sim_port.applied);
    assert!(
        !format!("{sim_port:?}").contains("pw2"),
        "Debug masks the password"
    );
}

/// A re-store that leaves the optional fields out keeps them — or, on a box that replaces
/// whole records (`store_port_replaces`), clears them.
#[tokio::test]
async fn a_re_store_keeps_or_clears_the_optional_fields_it_leaves_out() {
    let b = start_box(1).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let bare = port_doc(&imei, "portLim", "u", "p", free[0], free[1]);
    let mut limited = bare.clone();
    for (k, v) in [
        ("PROXY_VALID_BEFORE", "2099-01-01T00:00:00"),
        ("bw_quota", "5"),
        ("QUOTA_TYPE", "lifetime"),
        ("QUOTA_DIRECTION", "in+out"),
        ("bandlimin", "800"),
        ("bandlimout", "900"),
    ] {
        limited[k] = v.into();
    }
    let shown = |b: &SimBox| {
        let p = b.sim.port("portLim").unwrap();
        (p.valid_before, p.quota, p.bandlimin, p.bandlimout)
    };
    let all = || {
        (
            "2099-01-01T00:00:00".to_string(),
            "5".to_string(),
            "800".to_string(),
            "900".to_string(),
        )
    };
    assert_eq!(b.store_port(&limited).await["result"], "success");
    assert_eq!(b.store_port(&bare).await["result"], "success");
    assert_eq!(shown(&b), all(), "kept by default");

    b.sim.set_store_port_replaces(true);
    let state: Value = b
        .client
        .get(b.url("/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["store_port_replaces"], true);
    assert_eq!(b.store_port(&limited).await["result"], "success");
    assert_eq!(shown(&b), all(), "what is sent is stored");
    assert_eq!(b.store_port(&bare).await["result"], "success");
    assert_eq!(shown(&b), Default::default(), "cleared by a replacing box");
    assert!(!b.sim.port("portLim").unwrap().over_quota);
}

#[tokio::test]
async fn store_port_errors_come_back_as_http_200() {
    let b = start_box(2).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let taken = port_doc(&imei, "portTaken", "u", "p", free[0], free[1]);
    assert_eq!(b.store_port(&taken).await["result"], "success");

    let cases = [
        (
            "unknown IMEI",
            port_doc("350000000009999", "portX", "u", "p", free[2], free[3]),
            "no such modem",
        ),
        (
            "port in use",
            port_doc(&imei, "portY", "u", "p", free[0], free[4]),
            "in use",
        ),
        (
            "same ports",
            port_doc(&imei, "portZ", "u", "p", free[5], free[5]),
            "invalid",
        ),
        (
            "no login",
            port_doc(&imei, "portW", "", "p", free[6], free[7]),
            "invalid",
        ),
    ];
    for (what, doc, needle) in cases {
        let reply = b.store_port(&doc).await;
        assert_eq!(reply["result"], "error", "{what}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{what}: {reply}"
        );
    }
    let raw = b
        .client
        .post(b.url("/crud/store_port"))
        .basic_auth(USER, Some(PASS))
        .form(&[("data", "{not json")])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let body: Value = serde_json::from_str(&raw.text().await.unwrap()).unwrap();
    assert_eq!(body["result"], "error");
    assert_eq!(b.sim.ports().len(), 1, "nothing half-created");
    assert_eq!(b.sim.api_calls("/crud/store_port"), 6);
}

#[tokio::test]
async fn apply_and_purge_unknown_ports() {
    let b = start_box(1).await;
    let apply = b.get("/apix/apply_port?arg=portNOPE").await;
    assert_eq!(apply.status, 404);
    let purge = b.get("/apix/purge_port?arg=portNOPE").await;
    assert_eq!(purge.status, 200);
    assert_eq!(purge.json()["result"], "error");
    assert!(purge.json()["message"]
        .as_str()
        .unwrap()
        .contains("no such port"));
}

#[tokio::test]
async fn free_ports_are_really_free() {
    let b = start_box(1).await;
    let ports = b.free_ports().await;
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 10);
    for p in ports {
        tokio::net::TcpListener::bind(("127.0.0.1", p))
            .await
            .expect("offered port is bindable");
    }
}

/// A test can make the box run out of free ports.
#[tokio::test]
async fn free_ports_offered_can_be_limited() {
    let b = start_box(1).await;
    b.sim.set_free_ports_offered(1);
    assert_eq!(b.free_ports().await.len(), 1);
    b.sim.set_free_ports_offered(0);
    assert!(b.free_ports().await.is_empty());
}

/// An unplugged modem leaves the status list; its ports stay stored.
#[tokio::test]
async fn a_removed_modem_leaves_the_status_list() {
    let b = start_box(2).await;
    let imei = b.sim.imeis()[0].clone();
    let port = b.sim.add_foreign_port(&imei, "manual").unwrap();
    b.sim.remove_modem(&imei).unwrap();
    assert!(b.sim.remove_modem(&imei).is_err(), "already gone");
    let status = b.get_json("/apix/show_status_json").await;
    assert_eq!(real_modems(&status).len(), 1);
    assert!(status
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["modem_details"]["IMEI"] != imei.as_str()));
    assert_eq!(b.sim.imeis().len(), 1);
    assert!(
        b.sim.port(&port.port_id).is_some(),
        "its port is still stored"
    );
}

#[tokio::test]
async fn bandwidth_report_uses_human_strings_null_and_zero() {
    let b = start_box(1).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    b.store_port(&port_doc(&imei, "portBw", "u", "p", free[0], free[1]))
        .await;
    let report = b.get_json("/apix/bandwidth_report_all").await;
    let entry = &report["portBw"];
    assert_eq!(
        entry["port"], "portBw",
        "`port` is the port id, not a number"
    );
    assert_eq!(entry["portName"], "name-portBw");
    assert_eq!(
        entry["bandwidth_bytes_day_in"], 0,
        "idle reads the number 0"
    );
    assert!(entry["bandwidth_bytes_yesterday_in"].is_null());
    assert_eq!(entry["bandwidth_bytes_premonth_out"], "0 B");
    let one = b.get_json("/apix/bandwidth_report_json?arg=portBw").await;
    assert_eq!(one["port"], "portBw");
}

fn modem_entry<'a>(status: &'a Value, imei: &str) -> &'a Value {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["modem_details"]["IMEI"] == imei)
        .unwrap()
}

#[tokio::test]
async fn rotation_shows_ip_reset_then_a_new_ip() {
    let b = start_box(2).await;
    b.sim.set_rotation_delay(Duration::from_millis(1500));
    let imei = b.sim.imeis()[0].clone();
    let before = b.sim.modem(&imei).unwrap().ext_ip;
    let reply = b
        .get_json(&format!("/apix/reset_modem_by_imei?IMEI={imei}"))
        .await;
    assert_eq!(reply["result"], "success");
    let during = b.get_json("/apix/show_status_json").await;
    assert_eq!(
        modem_entry(&during, &imei)["net_details"]["EXT_IP"],
        "IP_RESET"
    );
    assert_eq!(modem_entry(&during, &imei)["IS_ROTATED"], "true");
    let busy = b
        .get_json(&format!("/apix/reset_modem_by_imei?IMEI={imei}"))
        .await;
    assert_eq!(busy["result"], "error", "a second rotation while busy");
    let after = eventually("a new IP", || async {
        let s = b.get_json("/apix/show_status_json").await;
        let ip = modem_entry(&s, &imei)["net_details"]["EXT_IP"]
            .as_str()
            .unwrap()
            .to_string();
        (ip != "IP_RESET").then_some((ip, modem_entry(&s, &imei)["IS_ROTATED"].clone()))
    })
    .await;
    assert_ne!(after.0, before);
    assert!(after.0.parse::<std::net::Ipv4Addr>().is_ok());
    assert_eq!(after.1, "false");
    assert_eq!(b.sim.modem(&imei).unwrap().rotations, 1);
}

#[tokio::test]
async fn armed_rotation_keeps_the_ip_and_nick_works() {
    let b = start_box(2).await;
    b.sim.set_rotation_delay(Duration::from_millis(50));
    let imei = b.sim.imeis()[1].clone();
    let before = b.sim.modem(&imei).unwrap().ext_ip;
    b.sim.arm_same_ip_rotation(&imei).unwrap();
    let reply = b.get_json("/apix/reset_modem_by_nick?NICK=DE_2").await;
    assert_eq!(reply["result"], "success");
    let done = eventually("rotation done", || async {
        b.sim
            .modem(&imei)
            .filter(|m| m.rotations == 1 && !m.rotating)
    })
    .await;
    assert_eq!(done.ext_ip, before);
    assert!(!done.same_ip_next_rotation, "arming lasts one rotation");
}

#[tokio::test]
async fn rotation_errors_are_http_200() {
    let b = start_box(2).await;
    let imei = b.sim.imeis()[0].clone();
    b.sim.set_online(&imei, false).unwrap();
    let offline = b
        .get_json(&format!("/apix/reset_modem_by_imei?IMEI={imei}"))
        .await;
    assert_eq!(offline["result"], "error");
    let unknown = b
        .get_json("/apix/reset_modem_by_imei?IMEI=350000000009999")
        .await;
    assert_eq!(unknown["result"], "error");
    let nick = b.get_json("/apix/reset_modem_by_nick?NICK=XX_9").await;
    assert_eq!(nick["result"], "error");
    let status = b.get_json("/apix/show_status_json").await;
    assert_eq!(
        modem_entry(&status, &imei)["net_details"]["IS_ONLINE"],
        "no"
    );
}

#[tokio::test]
async fn carrier_and_ip_switches_show_in_status() {
    let b = start_box(1).await;
    let imei = b.sim.imeis()[0].clone();
    b.sim.set_carrier(&imei, "Unknown").unwrap();
    b.sim.set_ext_ip(&imei, "192.0.2.77").unwrap();
    let status = b.get_json("/apix/show_status_json").await;
    assert_eq!(
        modem_entry(&status, &imei)["net_details"]["CELLOP"],
        "Unknown"
    );
    assert_eq!(
        modem_entry(&status, &imei)["net_details"]["EXT_IP"],
        "192.0.2.77"
    );
    assert!(b.sim.set_online("350000000009999", true).is_err());
}
