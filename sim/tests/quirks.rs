//! Each quirk switch of the simulator does what the spec's "Second look" says real boxes do,
//! and nothing when off: reply forms, late writes, port pools and pairs, ids and credentials
//! of the box's own, dropped fields, minute expiries, the HTML form path with its login wall
//! and traps, a busy first rotation, single status as an array, odd IMEIs, field counters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_sim::{pools, Quirks, SimConfig};
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

async fn quirky(quirks: Quirks) -> SimBox {
    start_box_with(SimConfig {
        modems: 3,
        rotation_delay: Duration::from_millis(300),
        quirks,
        ..SimConfig::default()
    })
    .await
}

fn one(name: &str) -> Quirks {
    let mut q = Quirks::default();
    q.enable(name).unwrap();
    q
}

/// A matched pair from the box's free list (HTTP ports first, then their SOCKS mates).
async fn pair(b: &SimBox) -> (u16, u16) {
    let free = b.free_ports().await;
    let half = free.len() / 2;
    (free[0], free[half])
}

#[tokio::test]
async fn mixed_replies_answer_each_action_in_its_own_form() {
    let b = quirky(one("mixed_replies")).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let doc = port_doc(&imei, "portMix", "user1", "password1", free[0], free[1]);
    let stored = b.store_port_raw(&doc).await;
    assert_eq!((stored.status, stored.body.as_str()), (200, ""));
    let applied = b.get("/apix/apply_port?arg=portMix").await;
    assert_eq!(applied.json(), json!({"result": true}));
    let purged = b.get("/apix/purge_port?arg=portMix").await;
    assert_eq!(purged.body, "OK");
    // An error still names itself.
    let again = b.get("/apix/purge_port?arg=portMix").await;
    assert_eq!(again.json()["result"], "error");
    assert!(b.sim.violations().is_empty(), "{:?}", b.sim.violations());
}

#[tokio::test]
async fn late_writes_show_in_the_port_list_after_the_delay() {
    let b = quirky(Quirks {
        write_delay: Duration::from_millis(400),
        ..Quirks::default()
    })
    .await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let started = Instant::now();
    b.store_port(&port_doc(
        &imei,
        "portLate",
        "user1",
        "password1",
        free[0],
        free[1],
    ))
    .await;
    assert!(b.listed().await.is_empty(), "shown at once");
    eventually("the stored port", || async {
        (!b.listed().await.is_empty()).then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    b.get("/apix/purge_port?arg=portLate").await;
    assert_eq!(b.listed().await.len(), 1, "a purge shows late too");
    eventually("the purge", || async {
        b.listed().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn pools_offer_matched_pairs_and_an_unmatched_pair_is_dropped() {
    let mut q = one("port_pools");
    q.enable("drops_unmatched_pair").unwrap();
    let b = quirky(q).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    assert_eq!(free.len(), 20);
    for i in 0..10 {
        assert!(pools::matched(free[i], free[i + 10]), "{free:?}");
    }
    let unmatched = port_doc(&imei, "portOdd", "user1", "password1", free[0], free[1]);
    assert_eq!(b.store_port(&unmatched).await["result"], "success");
    assert!(
        b.listed().await.is_empty(),
        "an unmatched pair is silently dropped"
    );
    let (http, socks) = pair(&b).await;
    b.store_port(&port_doc(
        &imei,
        "portOk",
        "user1",
        "password1",
        http,
        socks,
    ))
    .await;
    assert_eq!(b.listed().await.len(), 1);
}

#[tokio::test]
async fn a_box_that_assigns_ids_stores_under_its_own() {
    let b = quirky(one("assigns_port_id")).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    b.store_port(&port_doc(
        &imei,
        "portMine",
        "user1",
        "password1",
        free[0],
        free[1],
    ))
    .await;
    let listed = b.listed().await;
    assert_eq!(listed.len(), 1);
    let id = listed[0]["portID"].as_str().unwrap().to_string();
    assert_ne!(id, "portMine");
    assert_eq!(listed[0]["portName"], "name-portMine", "findable by name");
    assert_eq!(b.get("/apix/apply_port?arg=portMine").await.status, 404);
    assert_eq!(
        b.get(&format!("/apix/apply_port?arg={id}")).await.status,
        200
    );
    // Storing under the box's id updates that port.
    let mut update = port_doc(&imei, &id, "user1", "password1", free[0], free[1]);
    update["PROXY_VALID_BEFORE"] = json!("2031-01-01T00:00");
    b.store_port(&update).await;
    assert_eq!(b.listed().await.len(), 1);
}

#[tokio::test]
async fn a_box_that_refuses_custom_credentials_keeps_its_own() {
    let b = quirky(one("refuses_custom_credentials")).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    b.store_port(&port_doc(
        &imei,
        "portCred",
        "user1",
        "password1",
        free[0],
        free[1],
    ))
    .await;
    let port = &b.listed().await[0];
    assert_ne!(port["LOGIN"], "user1");
    assert_ne!(port["PASSWORD"], "password1");
    b.store_port(&port_doc(
        &imei,
        "portCred",
        "user2",
        "password2",
        free[0],
        free[1],
    ))
    .await;
    assert_eq!(
        b.listed().await[0]["LOGIN"],
        port["LOGIN"],
        "an update keeps them"
    );
}

#[tokio::test]
async fn dropped_and_reshaped_fields() {
    let mut q = one("drops_quota");
    q.enable("expiry_minutes").unwrap();
    q.enable("hides_speed_limits").unwrap();
    let b = quirky(q).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let mut doc = port_doc(&imei, "portF", "user1", "password1", free[0], free[1]);
    doc["PROXY_VALID_BEFORE"] = json!("2031-01-01T10:20:30");
    doc["bw_quota"] = json!(500);
    doc["bandlimin"] = json!(800);
    b.store_port(&doc).await;
    let port = &b.listed().await[0];
    assert_eq!(port["PROXY_VALID_BEFORE"], "2031-01-01T10:20");
    assert_eq!(port["QUOTA"], "");
    assert!(port.get("bandlimin").is_none());
    assert_eq!(b.sim.ports()[0].quota, "", "not enforced either");

    let expiry = quirky(one("drops_expiry")).await;
    let imei = expiry.sim.imeis()[0].clone();
    let mut doc = port_doc(&imei, "portE", "user1", "password1", free[2], free[3]);
    doc["PROXY_VALID_BEFORE"] = json!("2031-01-01T10:20");
    expiry.store_port(&doc).await;
    assert_eq!(expiry.listed().await[0]["PROXY_VALID_BEFORE"], "");
}

#[tokio::test]
async fn the_quota_shows_as_bw_quota() {
    let b = quirky(one("quota_as_bw_quota")).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let mut doc = port_doc(&imei, "portQ", "user1", "password1", free[0], free[1]);
    doc["bw_quota"] = json!(500);
    b.store_port(&doc).await;
    let port = &b.listed().await[0];
    assert_eq!(port["QUOTA"], "");
    assert_eq!(port["bw_quota"], 500);
}

#[tokio::test]
async fn the_form_path_saves_rejects_silently_and_hides_the_password() {
    let mut q = one("no_json_write");
    q.enable("port_pools").unwrap();
    q.enable("drops_unmatched_pair").unwrap();
    let b = quirky(q).await;
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let json_write = b
        .store_port_raw(&port_doc(
            &imei,
            "portJ",
            "user1",
            "password1",
            free[0],
            free[10],
        ))
        .await;
    assert_eq!(json_write.status, 404, "no JSON write on this box");

    let form = b.get(&format!("/conf/add_port?imei={imei}")).await;
    assert_eq!(form.status, 200);
    let fields = inputs(&form.body);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert!(get("portID").starts_with("port"));
    let (http, socks) = (
        get("http_port").parse().unwrap(),
        get("socks_port").parse().unwrap(),
    );
    assert!(
        pools::matched(http, socks),
        "the form offers a matched pair"
    );

    // A name a box refuses: 302 back to the form, and nothing stored.
    let mut bad = fields.clone();
    set(&mut bad, "portName", "a@b");
    let path = format!("/conf/add_port?imei={imei}");
    let rejected = b.post_form(&path, &bad, "").await;
    assert_eq!(
        (rejected.status, rejected.location.as_str()),
        (302, path.as_str())
    );
    assert!(b.listed().await.is_empty());

    let mut good = fields.clone();
    set(&mut good, "portName", "farmhand-al_form");
    set(&mut good, "proxy_login", "buyer1");
    set(&mut good, "proxy_password", "buyerpassword1");
    let saved = b.post_form(&path, &good, "").await;
    assert_eq!((saved.status, saved.location.as_str()), (302, "/conf"));
    let listed = b.listed().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["LOGIN"], "buyer1");
    let id = listed[0]["portID"].as_str().unwrap().to_string();

    // The edit form shows the password blank; posting it back wipes it.
    let edit = b.get(&format!("/conf/edit_port/{id}")).await;
    let shown = inputs(&edit.body);
    assert_eq!(
        shown.iter().find(|(n, _)| n == "proxy_password").unwrap().1,
        ""
    );
    b.post_form(&format!("/conf/edit_port/{id}"), &shown, "")
        .await;
    assert_eq!(b.listed().await[0]["PASSWORD"], "");

    let deleted = b.get(&format!("/conf/delete_port/{id}")).await;
    assert_eq!((deleted.status, deleted.location.as_str()), (302, "/conf"));
    assert!(b.listed().await.is_empty());
}

#[tokio::test]
async fn the_panel_login_wall_wants_the_session_cookie() {
    let b = quirky(one("panel_login")).await;
    let imei = b.sim.imeis()[0].clone();
    let walled = b.get(&format!("/conf/add_port?imei={imei}")).await;
    assert_eq!(walled.status, 302);
    assert!(
        walled.location.starts_with("/modem/login"),
        "{}",
        walled.location
    );
    let login =
        [("username", USER), ("password", PASS)].map(|(k, v)| (k.to_string(), v.to_string()));
    let wrong =
        [("username", USER), ("password", "nope")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert!(b
        .post_form("/modem/login", &wrong, "")
        .await
        .cookies
        .is_empty());
    let logged_in = b.post_form("/modem/login", &login, "").await;
    assert_eq!(logged_in.status, 302);
    assert_eq!(logged_in.cookies.len(), 2, "{:?}", logged_in.cookies);
    assert!(
        logged_in.cookies[0].starts_with("allowCGP="),
        "the session is not the first cookie"
    );
    let cookie: Vec<&str> = logged_in
        .cookies
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect();
    let form = b
        .get_with_cookie(&format!("/conf/add_port?imei={imei}"), &cookie.join("; "))
        .await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"portID\""));
}

#[tokio::test]
async fn the_first_rotation_of_a_modem_is_answered_busy() {
    let b = quirky(one("busy_first_reset")).await;
    let imei = b.sim.imeis()[0].clone();
    let first = b
        .get_json(&format!("/apix/reset_modem_by_imei?IMEI={imei}"))
        .await;
    assert_eq!(first["result"], "error");
    assert!(first["message"].as_str().unwrap().contains("busy"));
    let second = b
        .get_json(&format!("/apix/reset_modem_by_imei?IMEI={imei}"))
        .await;
    assert_eq!(second["result"], "success");
}

#[tokio::test]
async fn single_status_is_an_array_and_takes_an_imei() {
    let b = quirky(one("single_status_array")).await;
    let imei = b.sim.imeis()[0].clone();
    let by_imei = b
        .get_json(&format!("/apix/show_single_status_json?arg={imei}"))
        .await;
    assert_eq!(by_imei.as_array().unwrap().len(), 1);
    assert_eq!(by_imei[0]["modem_details"]["IMEI"], imei.as_str());
    let by_nick = b.get_json("/apix/show_single_status_json?arg=DE_1").await;
    assert_eq!(by_nick[0]["modem_details"]["NICK"], "DE_1");
    let classic = quirky(Quirks::default()).await;
    assert!(classic
        .get_json("/apix/show_single_status_json?arg=DE_1")
        .await
        .is_object());
}

#[tokio::test]
async fn odd_imeis_and_rich_status() {
    let mut q = one("odd_imeis");
    q.enable("rich_status").unwrap();
    let b = quirky(q).await;
    let lengths: Vec<usize> = b.sim.imeis().iter().map(String::len).collect();
    assert_eq!(lengths, [15, 14, 16]);
    let status = b.get_json("/apix/show_status_json").await;
    assert_eq!(status[0]["OWNER"], "proxy");
    assert_eq!(status[0]["net_details"]["CurrentNetworkType"], "LTE");
    b.sim.set_redirect_imposed(&b.sim.imeis()[0], true).unwrap();
    b.sim.set_auto_rotation(&b.sim.imeis()[0], 8).unwrap();
    let status = b.get_json("/apix/show_status_json").await;
    assert_eq!(status[0]["net_details"]["HTTP_REDIRECT_IMPOSED"], 1);
    assert_eq!(status[0]["modem_details"]["AUTO_IP_ROTATION"], "8");
}

#[tokio::test]
async fn field_counters_keep_lifetime_totals_across_the_nightly_reset() {
    let b = quirky(one("field_counters")).await;
    let imei = b.sim.imeis()[0].clone();
    let (origin, _guard) = start_origin().await;
    let (id, http, _) = b.live_port(&imei, "user1", "password1").await;
    let request = format!(
        "GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {}\r\n\r\n",
        basic("user1", "password1")
    );
    raw_exchange(([127, 0, 0, 1], http).into(), request.as_bytes())
        .await
        .unwrap();
    b.sim.reset_traffic();
    let entry = &b.get_json("/apix/bandwidth_report_all").await[&id];
    assert_eq!(entry["bandwidth_bytes_day_in"], 0, "the day counter reset");
    assert!(entry["bandwidth_bytes_prevmonth_in"].is_null());
    let lifetime = entry["bandwidth_bytes_lifetime_in"].as_str().unwrap();
    assert!(lifetime.ends_with("KB"), "{lifetime}");
}

#[tokio::test]
async fn the_field_profile_has_the_evidence_and_writes_show_violations() {
    let b = start_box_with(SimConfig {
        modems: 3,
        ..SimConfig::field()
    })
    .await;
    assert!(b.sim.quirks().port_pools);
    let imei = b.sim.imeis()[0].clone();
    let (http, socks) = pair(&b).await;
    let mut doc = port_doc(&imei, "portV", "user1", "password1", http, socks);
    doc["QUOTA_TYPE"] = json!("lifetime");
    doc["bw_quota"] = json!(5);
    doc["QUOTA_DIRECTION"] = json!("inout");
    b.store_port_raw(&doc).await;
    let violations = b.sim.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("QUOTA_TYPE"));
    b.get("/apix/no_such_thing").await;
    assert_eq!(b.sim.violations().len(), 2);
}

/// The `name`/`value` pairs of a form page's inputs and selected options.
fn inputs(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(tag[start..end].to_string())
    };
    let mut out = Vec::new();
    for tag in html.split('<').skip(1) {
        if tag.starts_with("input") {
            if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
                out.push((n, v));
            }
        } else if tag.starts_with("select") {
            if let Some(n) = attr(tag, "name") {
                out.push((n, String::new()));
            }
        } else if tag.starts_with("option") && tag.contains(" selected") {
            if let (Some(last), Some(v)) = (out.last_mut(), attr(tag, "value")) {
                last.1 = v;
            }
        }
    }
    out
}

fn set(fields: &mut [(String, String)], name: &str, value: &str) {
    if let Some(f) = fields.iter_mut().find(|(n, _)| n == name) {
        f.1 = value.to_string();
    }
}

#[tokio::test]
async fn an_expired_port_stops_serving_unless_the_box_ignores_expiry() {
    for (quirks, serves) in [(Quirks::default(), false), (one("ignores_expiry"), true)] {
        let b = quirky(quirks).await;
        let imei = b.sim.imeis()[0].clone();
        let free = b.free_ports().await;
        let mut doc = port_doc(&imei, "portExp", "user1", "password1", free[0], free[1]);
        doc["PROXY_VALID_BEFORE"] = json!("2021-01-01T00:00");
        b.store_port_raw(&doc).await;
        assert_eq!(b.get("/apix/apply_port?arg=portExp").await.status, 200);
        // A box that ignores its expiry does not flag the port as expired either.
        assert_eq!(b.listed().await[0]["IS_EXPIRED"], u8::from(!serves));
        let answer = raw_exchange(
            ([127, 0, 0, 1], free[0]).into(),
            b"GET http://x/ HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap_or_default();
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(text.contains("407"), serves, "{text:?}");
    }
}
