//! The operator console without a browser (the browser test is `tests/console_browser.rs`):
//! sign-in exchanges a key for a cookie with the right flags, a wrong key gets a clear
//! refusal and spends the address's failure budget, every answer carries the CSP, admin
//! pages are refused to marketplace keys by the server, the live stream is scoped to the
//! role and holds no credential, and a revoked key's session ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

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
    let reply = client()
        .post(format!("http://{}/console/login", plane.addr))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 303);
    assert_eq!(reply.headers()["location"], "/console/fleet");
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
    assert!(refused.text().await.unwrap().contains("admin keys only"));
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
    let health = first_snapshot(&plane, &market, "health").await;
    assert!(
        health["health"].is_null(),
        "a marketplace stream carries no health: {health}"
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
