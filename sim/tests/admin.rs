//! The `/_sim/` admin interface used by scripts: state, modem switches, foreign ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn state_lists_modems_and_ports() {
    let b = start_box(3).await;
    let state: Value = b
        .client
        .get(b.url("/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["modems"].as_array().unwrap().len(), 3);
    assert_eq!(state["modems"][0]["imei"], b.sim.imeis()[0]);
    assert_eq!(state["ports"], json!([]));
    assert_eq!(state["fault"]["kind"], "none");
}

#[tokio::test]
async fn modem_patch_changes_what_the_api_reports() {
    let b = start_box(2).await;
    let imei = b.sim.imeis()[1].clone();
    let path = format!("/_sim/modems/{imei}");
    let patched = b
        .admin_post(&path, &json!({"online": false, "carrier": "Unknown"}))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.json()["online"], false);
    let m = b.sim.modem(&imei).unwrap();
    assert!(!m.online);
    assert_eq!(m.carrier, "Unknown");
    let single = b.get_json("/apix/show_single_status_json?arg=DE_2").await;
    assert_eq!(single["net_details"]["IS_ONLINE"], "no");
    assert_eq!(single["net_details"]["CELLOP"], "Unknown");

    b.admin_post(
        &path,
        &json!({"ext_ip": "192.0.2.9", "online": true, "same_ip_next_rotation": true}),
    )
    .await;
    let m = b.sim.modem(&imei).unwrap();
    assert_eq!(m.ext_ip, "192.0.2.9");
    assert!(m.same_ip_next_rotation);

    assert_eq!(
        b.admin_post("/_sim/modems/350000000009999", &json!({"online": true}))
            .await
            .status,
        404
    );
    assert_eq!(
        b.admin_post(&path, &json!({"colour": "red"})).await.status,
        400
    );
    assert_eq!(
        b.admin_post("/_sim/rotation_delay", &json!({"ms": 10}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn foreign_ports_show_up_like_any_other() {
    let b = start_box(1).await;
    let imei = b.sim.imeis()[0].clone();
    let made = b
        .admin_post(
            "/_sim/ports",
            &json!({"imei": imei, "port_name": "manual one", "apply": true}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let port = made.json();
    assert_eq!(port["foreign"], true);
    assert_eq!(port["applied"], true);
    let listed = b.get_json("/apix/list_ports_json").await;
    assert_eq!(listed[&imei][0]["portName"], "manual one");
    assert_eq!(listed[&imei][0]["OWNER"], "manual");
    let bad = b.admin_post("/_sim/ports", &json!({"imei": "nope"})).await;
    assert_eq!(bad.status, 400);

    let via_handle = b.sim.add_foreign_port(&imei, "second").unwrap();
    assert!(!via_handle.applied);
    assert_eq!(b.sim.ports().len(), 2);
}
