//! The operator console without a browser (the browser test is `tests/console_browser.rs`):
//! sign-in exchanges a key for a cookie with the right flags, a wrong key gets a clear
//! refusal and spends the address's failure budget, every answer carries the CSP, admin
//! pages are refused to marketplace keys by the server, the live stream is scoped to the
//! role and holds no credential, and a revoked key's session ends. A seller key sees its
//! own boxes — in the console and through `GET /v1/seller/boxes` — and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::flows::{allocate, release_ok};
use support::TestPlane;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `key`; the session cookie (`name=value`) and the `Set-Cookie` line.
async fn sign_in(plane: &TestPlane, key: &str) -> (String, String) {
    sign_in_to(plane, key, "/console/fleet").await
}

/// Signs in with `key`, landing on `home`.
async fn sign_in_to(plane: &TestPlane, key: &str, home: &str) -> (String, String) {
    let reply = client()
        .post(format!("http://{}/console/login", plane.addr))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 303);
    assert_eq!(reply.headers()["location"], home);
    let set = reply.headers()["set-cookie"].to_str().unwrap().to_string();
    let pair = set.split(';').next().unwrap().to_string();
    (pair, set)
}

async fn get(plane: &TestPlane, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("http://{}{path}", plane.addr));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// The first `snapshot` event of the live stream of `page` (`fleet`, `health`, …).
async fn first_snapshot(plane: &TestPlane, cookie: &str, page: &str) -> serde_json::Value {
    let path = format!("/console/events?page={page}");
    let mut reply = get(plane, &path, Some(cookie)).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), reply.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: snapshot\n"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    serde_json::from_str(data).unwrap()
}

#[tokio::test]
async fn sign_in_roles_and_the_live_stream_are_the_servers_to_enforce() {
    let plane = TestPlane::start().await;
    // Not signed in: every page sends to sign-in, with the CSP on.
    let page = get(&plane, "/console/fleet", None).await;
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/console/login");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let stream = get(&plane, "/console/events?page=fleet", None).await;
    assert_eq!(stream.status(), 401);

    // A wrong key: a clear message and no cookie.
    let wrong = client()
        .post(format!("http://{}/console/login", plane.addr))
        .form(&[("key", "fh_not_a_key")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.unwrap().contains("not valid"));

    // The admin key: a cookie with its flags, every page, agents and health in the stream.
    let (admin, set) = sign_in(&plane, &plane.admin).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP here: Secure is set under TLS"
    );
    let fleet = get(&plane, "/console/fleet", Some(&admin)).await;
    assert_eq!(fleet.status(), 200);
    let html = fleet.text().await.unwrap();
    assert!(html.contains("id=\"agents\"") && html.contains("/console/assets/console.js"));
    assert!(!html.contains("<script>"), "no inline script");
    assert_eq!(
        get(&plane, "/console/health", Some(&admin)).await.status(),
        200
    );
    // Each page's stream carries what that page shows, and only that.
    let fleet = first_snapshot(&plane, &admin, "fleet").await;
    assert_eq!(fleet["role"], "admin");
    assert!(
        fleet["agents"].is_array() && fleet["trend"].is_array(),
        "{fleet}"
    );
    assert!(
        fleet["health"].is_null() && fleet["allocations"].is_null(),
        "{fleet}"
    );
    let health = first_snapshot(&plane, &admin, "health").await;
    assert!(
        health["health"].is_object() && health["modems"].is_null(),
        "{health}"
    );
    let bogus = get(&plane, "/console/events?page=keys", Some(&admin)).await;
    assert_eq!(bogus.status(), 422);

    // A marketplace key: no admin page, no agent records, no credential.
    let (market, _) = sign_in(&plane, &plane.market).await;
    let refused = get(&plane, "/console/health", Some(&market)).await;
    assert_eq!(refused.status(), 403);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("not open to marketplace keys"));
    let html = get(&plane, "/console/fleet", Some(&market))
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("id=\"agents\"") && !html.contains("/console/health"));
    let snapshot = first_snapshot(&plane, &market, "fleet").await;
    assert!(snapshot["modems"].is_array(), "{snapshot}");
    assert!(
        snapshot["agents"].is_null() && snapshot["trend"].is_null(),
        "{snapshot}"
    );
    let health = get(&plane, "/console/events?page=health", Some(&market)).await;
    assert_eq!(
        health.status(),
        403,
        "a marketplace key follows no health stream"
    );
    let boxes = get(&plane, "/console/events?page=boxes", Some(&market)).await;
    assert_eq!(boxes.status(), 403, "nor a seller's");
    assert_eq!(
        get(&plane, "/console/boxes", Some(&market)).await.status(),
        403
    );
    let sold = first_snapshot(&plane, &market, "allocations").await;
    assert!(sold["allocations"].is_array() && !sold.to_string().contains("password"));

    // Signing out from another site is refused; a revoked key's session ends.
    let foreign = client()
        .post(format!("http://{}/console/logout", plane.addr))
        .header("cookie", &market)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let keys = plane.get("/v1/keys", &plane.admin).await.json();
    let market_id = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "marketplace")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = plane
        .delete(&format!("/v1/keys/{market_id}"), &plane.admin)
        .await;
    assert!(revoked.status < 300, "{}", revoked.body);
    let after = get(&plane, "/console/fleet", Some(&market)).await;
    assert_eq!(after.status(), 303, "a revoked key's session is over");
}

/// A seller key: its own boxes and what is sold on them (no buyer data), over REST and in
/// the console; every other route, page and stream refused by the server.
#[tokio::test]
async fn a_seller_key_sees_its_own_boxes_and_nothing_else() {
    let plane = std::sync::Arc::new(TestPlane::start().await);
    let mut ours = plane.agent_of("seller-berlin", "350000000000018").await;
    // Sold before the other seller's box is there: the order can only land here.
    let sold = allocate(&plane, &mut ours, "o-seller-view").await;
    let _theirs = plane.agent_of("seller-paris", "350000000000026").await;
    let (sold_id, our_agent) = (
        sold["allocation_id"].as_str().unwrap().to_string(),
        sold["agent_id"].as_str().unwrap().to_string(),
    );

    // Keys: a seller key names its seller; no other key may.
    let create = |body: serde_json::Value| {
        let plane = plane.clone();
        async move { plane.post("/v1/keys", &plane.admin, body).await }
    };
    let no_label = create(json!({"role": "seller", "name": "s"})).await;
    assert_eq!(no_label.status, 422, "{}", no_label.body);
    let admin_label = create(json!({"role": "admin", "name": "a", "seller": "x"})).await;
    assert_eq!(admin_label.status, 422, "{}", admin_label.body);
    let made =
        create(json!({"role": "seller", "name": "berlin-ops", "seller": "seller-berlin"})).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let made = made.json();
    assert_eq!(
        (made["role"].as_str(), made["seller"].as_str()),
        (Some("seller"), Some("seller-berlin"))
    );
    let seller = made["key"].as_str().unwrap().to_string();

    // REST: its boxes, what is sold on them, no buyer data, no other seller.
    let r = plane.get("/v1/seller/boxes", &seller).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let boxes = r.json();
    assert_eq!(boxes["seller"], "seller-berlin");
    let list = boxes["boxes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{boxes}");
    assert_eq!(list[0]["agent_id"], our_agent.as_str());
    assert_eq!(list[0]["modems"][0]["imei"], "350000000000018");
    assert_eq!(list[0]["sold"][0]["allocation_id"], sold_id.as_str());
    assert!(list[0]["quality_24h"].is_object(), "{boxes}");
    for secret in [
        "o-seller-view",
        sold["login"].as_str().unwrap(),
        sold["password"].as_str().unwrap(),
        "350000000000026",
    ] {
        assert!(!r.body.contains(secret), "the seller view shows {secret:?}");
    }
    let other = plane
        .get("/v1/seller/boxes?seller=seller-paris", &seller)
        .await;
    assert_eq!(other.status, 403, "another seller's boxes");
    let paris = plane
        .get("/v1/seller/boxes?seller=seller-paris", &plane.admin)
        .await;
    assert_eq!(
        paris.json()["boxes"][0]["modems"][0]["imei"],
        "350000000000026"
    );
    assert_eq!(
        plane.get("/v1/seller/boxes", &plane.admin).await.status,
        422
    );
    assert_eq!(
        plane.get("/v1/seller/boxes", &plane.market).await.status,
        403
    );
    // Nothing else is open to it: the marketplace's routes and the admin's.
    for path in [
        "/v1/modems",
        "/v1/allocations",
        "/v1/agents",
        "/v1/quality",
        "/v1/keys",
    ] {
        assert_eq!(plane.get(path, &seller).await.status, 403, "{path}");
    }
    let order = json!({"order_id": "o-by-seller", "duration_s": 60});
    assert_eq!(
        plane.post("/v1/allocations", &seller, order).await.status,
        403
    );
    let release = plane
        .delete(&format!("/v1/allocations/{sold_id}"), &seller)
        .await;
    assert_eq!(release.status, 403);

    // Its modems' traffic per day: JSON, CSV, and the console's download.
    let report = farmhand_protocol::UsageReport {
        measured_at_ms: farmhand_control::ids::unix_ms(farmhand_control::ids::now()),
        allocations: vec![farmhand_protocol::AllocationUsage {
            allocation_id: sold_id.clone(),
            bytes_in: 4_000_000,
            bytes_out: 1_000,
        }],
    };
    let now_ms = report.measured_at_ms;
    let stored = plane
        .store()
        .record_usage_report(&our_agent, &report, now_ms)
        .await
        .unwrap();
    assert_eq!(stored.stored, 1);
    let usage = plane.get("/v1/seller/usage", &seller).await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    let usage = usage.json();
    assert_eq!(usage["days"].as_array().unwrap().len(), 1, "{usage}");
    assert_eq!(usage["days"][0]["imei"], "350000000000018");
    assert_eq!(usage["days"][0]["bytes_in"], 4_000_000);
    let csv = plane.get("/v1/seller/usage?format=csv", &seller).await;
    assert_eq!(csv.status, 200);
    let mut lines = csv.body.lines();
    assert_eq!(lines.next(), Some("day,agent_id,imei,bytes_in,bytes_out"));
    assert!(
        lines
            .next()
            .unwrap()
            .ends_with(",350000000000018,4000000,1000"),
        "{}",
        csv.body
    );
    let bad = plane.get("/v1/seller/usage?from=2026-13-01", &seller).await;
    assert_eq!(bad.status, 422);
    let long = plane
        .get("/v1/seller/usage?from=2020-01-01&to=2026-01-01", &seller)
        .await;
    assert_eq!(long.status, 422, "at most a year at once");
    assert_eq!(
        plane.get("/v1/seller/usage", &plane.market).await.status,
        403
    );

    // The console: its boxes page, live, and no other page or stream.
    let (cookie, _) = sign_in_to(&plane, &seller, "/console/boxes").await;
    let html = get(&plane, "/console/boxes", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("id=\"boxes\"") && html.contains("id=\"ports\""));
    assert!(
        !html.contains("/console/fleet"),
        "no link to pages it cannot open"
    );
    let snapshot = first_snapshot(&plane, &cookie, "boxes").await;
    assert_eq!(snapshot["role"], "seller");
    assert_eq!(snapshot["boxes"].as_array().unwrap().len(), 1, "{snapshot}");
    assert_eq!(
        snapshot["boxes"][0]["sold"][0]["allocation_id"],
        sold_id.as_str()
    );
    assert!(
        !snapshot.to_string().contains("o-seller-view"),
        "{snapshot}"
    );
    assert_eq!(snapshot["usage"][0]["bytes_in"], 4_000_000, "{snapshot}");
    let download = get(&plane, "/console/usage.csv", Some(&cookie)).await;
    assert_eq!(download.status(), 200);
    assert!(download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert!(download.text().await.unwrap().contains(",4000000,1000"));
    for page in [
        "/console/fleet".to_string(),
        "/console/allocations".to_string(),
        "/console/health".to_string(),
        format!("/console/allocations/{sold_id}"),
        "/console/modems/350000000000018".to_string(),
    ] {
        let refused = get(&plane, &page, Some(&cookie)).await;
        assert_eq!(refused.status(), 403, "{page}");
    }
    for page in ["fleet", "allocations", "health"] {
        let path = format!("/console/events?page={page}");
        assert_eq!(
            get(&plane, &path, Some(&cookie)).await.status(),
            403,
            "{page}"
        );
    }
    let path = format!("/console/events?page=allocation&id={sold_id}");
    assert_eq!(get(&plane, &path, Some(&cookie)).await.status(), 403);
}

/// The session's CSRF token, as its pages carry it.
async fn csrf(plane: &TestPlane, cookie: &str, page: &str) -> String {
    let html = get(plane, page, Some(cookie)).await.text().await.unwrap();
    let start = html.find("data-csrf=\"").unwrap() + "data-csrf=\"".len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_string()
}

/// POSTs a console action with `token` (and, when given, an `Origin`).
async fn act(
    plane: &TestPlane,
    cookie: &str,
    action: &str,
    body: serde_json::Value,
    token: Option<&str>,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .post(format!("http://{}/console/actions/{action}", plane.addr))
        .header("cookie", cookie)
        .json(&body);
    if let Some(token) = token {
        request = request.header("x-console-csrf", token);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

/// Actions from a page are the REST API's own (same roles, scoping and audit), and only
/// with the session's CSRF token from this origin.
#[tokio::test]
async fn console_actions_need_the_sessions_token_and_keep_the_rest_apis_rules() {
    let plane = std::sync::Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem("350000000000018").await;
    let sold = allocate(&plane, &mut agent, "o-console-release").await;
    let id = sold["allocation_id"].as_str().unwrap().to_string();
    let (market, _) = sign_in(&plane, &plane.market).await;
    let token = csrf(&plane, &market, &format!("/console/allocations/{id}")).await;
    let target = json!({"id": id});

    // No token, a wrong one, another site: refused, nothing released.
    for (token, origin) in [
        (None, None),
        (Some("ct_forged"), None),
        (Some(token.as_str()), Some("https://evil.example")),
    ] {
        let refused = act(&plane, &market, "release", target.clone(), token, origin).await;
        assert_eq!(refused.status(), 403, "{token:?} {origin:?}");
    }
    assert_eq!(plane.allocation(&id).await["state"], "active");
    // The allocations page: soonest expiry first, with usage and probe health, and how
    // many expire within the hour (this one: an hour long).
    let report = farmhand_protocol::UsageReport {
        measured_at_ms: farmhand_control::ids::unix_ms(farmhand_control::ids::now()),
        allocations: vec![farmhand_protocol::AllocationUsage {
            allocation_id: id.clone(),
            bytes_in: 3_000,
            bytes_out: 500,
        }],
    };
    let agent_id = sold["agent_id"].as_str().unwrap();
    plane
        .store()
        .record_usage_report(agent_id, &report, report.measured_at_ms)
        .await
        .unwrap();
    let page = first_snapshot(&plane, &market, "allocations").await;
    let row = &page["allocations"][0];
    assert_eq!(row["allocation_id"], id.as_str());
    assert_eq!(row["used_bytes"], 3_500, "{row}");
    assert!(
        row.get("probe_health").is_some_and(|h| h.is_null()),
        "not probed: {row}"
    );
    assert!(
        page["allocation_counts"]["expiring within 1 h"].is_u64(),
        "{page}"
    );
    // A marketplace may not revoke an agent, from the console either.
    let revoke = act(
        &plane,
        &market,
        "revoke",
        json!({"id": agent_id}),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(revoke.status(), 403);

    // With its token: released through the REST API's own handler, audited as the key.
    let (p, cookie, t, body) = (plane.clone(), market.clone(), token.clone(), target.clone());
    let releasing =
        tokio::spawn(async move { act(&p, &cookie, "release", body, Some(&t), None).await });
    assert_eq!(release_ok(&mut agent).await, id);
    let released = releasing.await.unwrap();
    assert_eq!(released.status(), 200);
    let answer: serde_json::Value = released.json().await.unwrap();
    assert_eq!(answer["state"], "released");
    let log = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
    let entry = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "allocation_released" && e["target"] == format!("allocation:{id}"))
        .cloned()
        .unwrap();
    assert!(
        entry["actor"].as_str().unwrap().starts_with("marketplace:"),
        "{entry}"
    );

    // Another tenant's allocation is not found, as in the REST API; an unknown action too.
    let missing = act(
        &plane,
        &market,
        "release",
        json!({"id": "al_nope"}),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(missing.status(), 404);
    let unknown = act(
        &plane,
        &market,
        "explode",
        target.clone(),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(unknown.status(), 404);

    // A seller has no action.
    let made = plane
        .post(
            "/v1/keys",
            &plane.admin,
            json!({"role": "seller", "name": "s", "seller": "seller-42"}),
        )
        .await
        .json();
    let (seller, _) = sign_in_to(&plane, made["key"].as_str().unwrap(), "/console/boxes").await;
    let seller_token = csrf(&plane, &seller, "/console/boxes").await;
    let rotate = json!({"id": "350000000000018"});
    let refused = act(&plane, &seller, "rotate", rotate, Some(&seller_token), None).await;
    assert_eq!(refused.status(), 403);

    // Rotating from a modem's page: a receipt (old → new IP, how long) on that page, and a
    // modem going offline shows in its online history.
    let imei = "350000000000018";
    let (p, cookie, t) = (plane.clone(), market.clone(), token.clone());
    let rotating = tokio::spawn(async move {
        act(&p, &cookie, "rotate", json!({"id": imei}), Some(&t), None).await
    });
    let command = agent.next_command().await;
    let output = farmhand_protocol::CommandOutput::RotateIp(farmhand_protocol::Rotated {
        imei: imei.into(),
        old_ip: Some("198.51.100.11".into()),
        new_ip: Some("198.51.100.99".into()),
        changed: true,
    });
    agent
        .answer(&command.id, farmhand_protocol::Outcome::Ok { output })
        .await;
    assert_eq!(rotating.await.unwrap().status(), 200);
    let mut offline = support::modem(imei, "Vodafone");
    offline.online = false;
    agent.send_inventory(vec![offline]).await;
    let (admin, _) = sign_in(&plane, &plane.admin).await;
    let page = format!("modem&id={imei}");
    let history = support::eventually("the modem's history", || async {
        let snapshot = first_snapshot(&plane, &admin, &page).await;
        let history = snapshot["modem"]["copies"][0]["history"].clone();
        (!history["online"].as_array()?.is_empty()).then_some(history)
    })
    .await;
    assert_eq!(history["online"][0]["online"], false, "{history}");
    let receipt = &history["rotations"][0];
    assert_eq!(
        (receipt["old_ip"].as_str(), receipt["new_ip"].as_str()),
        (Some("198.51.100.11"), Some("198.51.100.99"))
    );
    assert!(
        receipt["took_ms"].is_u64() && receipt["automatic"] == false,
        "{receipt}"
    );

    // An admin revokes the agent from the fleet page.
    let admin_token = csrf(&plane, &admin, "/console/fleet").await;
    assert_ne!(admin_token, token, "a token per session");
    let revoked = act(
        &plane,
        &admin,
        "revoke",
        json!({"id": agent_id}),
        Some(&admin_token),
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    let agent_view = plane
        .get(&format!("/v1/agents/{agent_id}"), &plane.admin)
        .await
        .json();
    assert_eq!(agent_view["revoked"], true);
}

/// The fleet shows each agent's session (protocol, connected since) and the health page
/// the commands awaiting an answer — counted while the agent sits on one, gone once it
/// answers — as `/metrics` does.
#[tokio::test]
async fn agents_show_their_session_and_health_counts_commands_in_flight() {
    let plane = std::sync::Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem("350000000000034").await;
    let agents = plane.get("/v1/agents", &plane.admin).await.json();
    let view = &agents["agents"][0];
    assert_eq!(view["protocol_version"], 1, "{view}");
    let since = view["connected_since"].as_str().unwrap();
    let seen = view["last_seen"].as_str().unwrap();
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(parse(since) <= parse(seen), "{view}");
    let (admin, _) = sign_in(&plane, &plane.admin).await;
    let fleet = first_snapshot(&plane, &admin, "fleet").await;
    assert_eq!(fleet["agents"][0]["protocol"], 1, "{fleet}");
    assert_eq!(fleet["agents"][0]["connected_since"].as_str(), Some(since));

    // The agent holds a provision without answering: one in flight.
    let order = support::flows::order("o-in-flight");
    let sale = support::flows::post_allocation(&plane, order);
    let command = agent.next_command().await;
    let health = support::eventually("the provision counted in flight", || async {
        let snapshot = first_snapshot(&plane, &admin, "health").await;
        (snapshot["health"]["commands_in_flight"] == 1).then_some(snapshot)
    })
    .await;
    let rows = health["health"]["commands"].as_array().unwrap();
    let provision = rows.iter().find(|r| r["op"] == "provision").unwrap();
    assert_eq!(provision["in_flight"], 1, "{health}");
    assert!(health["health"]["oldest_in_flight_ms"].is_u64(), "{health}");
    assert_eq!(
        (&health["health"]["store"], &health["health"]["node"]),
        (&json!("sled"), &json!(null)),
        "one node on sled: no node id"
    );
    let metrics = plane.get("/metrics", &plane.admin).await;
    assert!(
        metrics
            .body
            .contains("farmhand_commands_in_flight{op=\"provision\"} 1"),
        "{}",
        metrics.body
    );

    // Answered: nothing in flight, one answered.
    support::flows::answer_provision(&mut agent, command).await;
    assert_eq!(sale.await.unwrap().status, 201);
    let health = first_snapshot(&plane, &admin, "health").await;
    assert_eq!(health["health"]["commands_in_flight"], 0, "{health}");
    assert!(
        health["health"]["oldest_in_flight_ms"].is_null(),
        "{health}"
    );
    let rows = health["health"]["commands"].as_array().unwrap();
    let provision = rows.iter().find(|r| r["op"] == "provision").unwrap();
    assert_eq!(
        (&provision["in_flight"], &provision["answered"]),
        (&json!(0), &json!(1)),
        "{health}"
    );
}
