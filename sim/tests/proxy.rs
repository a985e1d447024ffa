//! The per-port proxies are real: HTTP (absolute-form and CONNECT) and SOCKS5 with the port's
//! credentials, only once applied, gone after purge, closed while the modem is offline,
//! counted in the bandwidth report, and held to the port's quota and speed limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;

fn proxied_client(http_port: u16, login: &str, password: &str) -> reqwest::Client {
    let proxy = reqwest::Proxy::http(format!("http://127.0.0.1:{http_port}"))
        .unwrap()
        .basic_auth(login, password);
    client_builder().proxy(proxy).build().unwrap()
}

#[tokio::test]
async fn http_proxy_forwards_absolute_form_and_counts_bytes() {
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let imei = b.sim.imeis()[0].clone();
    let (id, http, _) = b.live_port(&imei, "buyer", "pw-1").await;
    let client = proxied_client(http, "buyer", "pw-1");
    let body = client
        .get(format!("http://{origin}/hello?x=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "origin saw /hello?x=1");
    let big = client
        .get(format!("http://{origin}/big"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(big.len(), 5000);

    let port = b.sim.port(&id).unwrap();
    assert!(port.applied);
    assert!(port.bytes_in >= 5000, "download counted: {}", port.bytes_in);
    assert!(port.bytes_out > 0, "upload counted");
    let report = b.get_json("/apix/bandwidth_report_all").await;
    let day_in = report[&id]["bandwidth_bytes_day_in"].as_str().unwrap();
    assert!(day_in.ends_with("KB"), "human string: {day_in}");
    b.sim.reset_traffic();
    assert_eq!(b.sim.port(&id).unwrap().bytes_in, 0);
}

#[tokio::test]
async fn http_proxy_tunnels_connect() {
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let (_, http, _) = b.live_port(&b.sim.imeis()[0], "buyer", "pw").await;
    let req = format!(
        "CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {}\r\n\r\n\
         GET /tunnelled HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n",
        basic("buyer", "pw")
    );
    let out = String::from_utf8(
        raw_exchange(([127, 0, 0, 1], http).into(), req.as_bytes())
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("origin saw /tunnelled"), "{out}");
}

#[tokio::test]
async fn http_proxy_demands_the_right_credentials() {
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let (_, http, _) = b.live_port(&b.sim.imeis()[0], "buyer", "right").await;
    let addr = ([127, 0, 0, 1], http).into();
    let anonymous = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let wrong = format!(
        "GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {}\r\n\r\n",
        basic("buyer", "wrong")
    );
    for req in [anonymous, wrong] {
        let out = String::from_utf8(raw_exchange(addr, req.as_bytes()).await.unwrap()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 407 Proxy Authentication Required"),
            "{out}"
        );
        assert!(
            out.contains("Proxy-Authenticate: Basic realm=\"proxy\""),
            "{out}"
        );
    }
    let resp = proxied_client(http, "buyer", "wrong")
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 407);
}

#[tokio::test]
async fn socks5_connects_by_ipv4_and_domain() {
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let (id, _, socks) = b.live_port(&b.sim.imeis()[0], "sock", "pw-s").await;
    let by_ip = socks5_get(
        socks,
        "sock",
        "pw-s",
        Target::V4(Ipv4Addr::LOCALHOST, origin.port()),
        "/v4",
    )
    .await
    .unwrap();
    let Socks::Ok(out) = by_ip else {
        panic!("{by_ip:?}")
    };
    assert!(out.ends_with("origin saw /v4"), "{out}");
    let by_name = socks5_get(
        socks,
        "sock",
        "pw-s",
        Target::Domain("localhost".into(), origin.port()),
        "/name",
    )
    .await;
    // "localhost" may resolve to ::1 first where the origin does not listen; both outcomes
    // prove the domain form was parsed, success proves it end to end.
    match by_name.unwrap() {
        Socks::Ok(out) => assert!(out.ends_with("origin saw /name"), "{out}"),
        Socks::ConnectFailed(code) => assert!(code == 5 || code == 1, "code {code}"),
        other => panic!("{other:?}"),
    }
    assert!(b.sim.port(&id).unwrap().bytes_in > 0);
}

#[tokio::test]
async fn socks5_rejects_bad_credentials_and_methods() {
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let (_, _, socks) = b.live_port(&b.sim.imeis()[0], "sock", "pw-s").await;
    let wrong = socks5_get(
        socks,
        "sock",
        "nope",
        Target::V4(Ipv4Addr::LOCALHOST, origin.port()),
        "/",
    )
    .await;
    assert_eq!(wrong.unwrap(), Socks::AuthFailed(1));

    let mut s = TcpStream::connect(("127.0.0.1", socks)).await.unwrap();
    let out = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(&[5, 1, 0]).await.unwrap(); // only "no authentication"
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).await.unwrap();
        reply
    };
    assert_eq!(out, [5, 0xFF]);

    let refused = socks5_get(
        socks,
        "sock",
        "pw-s",
        Target::V4(Ipv4Addr::LOCALHOST, closed_port().await),
        "/",
    )
    .await;
    assert_eq!(refused.unwrap(), Socks::ConnectFailed(5));
}

async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn stored_but_not_applied_ports_do_not_listen() {
    let b = start_box(1).await;
    let free = b.free_ports().await;
    let doc = port_doc(&b.sim.imeis()[0], "portIdle", "u", "p", free[0], free[1]);
    assert_eq!(b.store_port(&doc).await["result"], "success");
    for port in [free[0], free[1]] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port {port} must not listen"
        );
    }
}

#[tokio::test]
async fn purge_closes_listeners_and_reapply_takes_new_credentials() {
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let imei = b.sim.imeis()[0].clone();
    let (id, http, socks) = b.live_port(&imei, "old", "old-pw").await;

    let doc = port_doc(&imei, &id, "new", "new-pw", http, socks);
    assert_eq!(b.store_port(&doc).await["result"], "success");
    let still_old = proxied_client(http, "old", "old-pw")
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(still_old.status(), 200, "stored changes need apply_port");
    assert_eq!(
        b.get_json(&format!("/apix/apply_port?arg={id}")).await["result"],
        "success"
    );
    let old = proxied_client(http, "old", "old-pw")
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 407);
    let new = proxied_client(http, "new", "new-pw")
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);

    let purged = b.get_json(&format!("/apix/purge_port?arg={id}")).await;
    assert_eq!(purged["result"], "success");
    for port in [http, socks] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port {port} still listens"
        );
    }
    assert!(b.sim.port(&id).is_none());
    assert!(b
        .get_json("/apix/list_ports_json")
        .await
        .get(&imei)
        .is_none());
}

#[tokio::test]
async fn offline_modem_closes_new_proxy_connections() {
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let imei = b.sim.imeis()[0].clone();
    let (_, http, socks) = b.live_port(&imei, "u", "p").await;
    b.sim.set_online(&imei, false).unwrap();
    let req = format!(
        "GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {}\r\n\r\n",
        basic("u", "p")
    );
    let out = raw_exchange(([127, 0, 0, 1], http).into(), req.as_bytes()).await;
    assert!(
        out.map(|o| o.is_empty()).unwrap_or(true),
        "offline proxy must not answer"
    );
    assert!(socks5_get(
        socks,
        "u",
        "p",
        Target::V4(Ipv4Addr::LOCALHOST, origin.port()),
        "/"
    )
    .await
    .is_err());

    b.sim.set_online(&imei, true).unwrap();
    let back = proxied_client(http, "u", "p")
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
}

/// An origin with a big download (`GET /` → `size` bytes) and an upload sink (`POST /` →
/// the number of bytes it read).
async fn bulk_origin(size: usize) -> (std::net::SocketAddr, tokio_util::sync::DropGuard) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/",
        get(move || async move { "x".repeat(size) })
            .post(|body: axum::body::Bytes| async move { body.len().to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    (addr, token.drop_guard())
}

/// Stores and applies a port with extra `store_port` fields (limits).
async fn limited_port(b: &SimBox, extra: Value) -> (String, u16, u16) {
    let imei = b.sim.imeis()[0].clone();
    let free = b.free_ports().await;
    let id = format!("port{}", free[0]);
    let mut doc = port_doc(&imei, &id, "buyer", "pw-1", free[0], free[1]);
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    let reply = b.store_port(&doc).await;
    assert_eq!(reply["result"], "success", "{reply}");
    let applied = b.get_json(&format!("/apix/apply_port?arg={id}")).await;
    assert_eq!(applied["result"], "success", "{applied}");
    (id, free[0], free[1])
}

fn over_quota_flag(ports: &Value, id: &str) -> Value {
    ports
        .as_object()
        .unwrap()
        .values()
        .flat_map(|list| list.as_array().unwrap())
        .find(|p| p["portID"] == id)
        .unwrap()["IS_OVER_QUOTA"]
        .clone()
}

#[tokio::test]
async fn a_port_over_its_quota_refuses_traffic_until_the_quota_is_raised() {
    let b = start_box(1).await;
    let (origin, _o) = bulk_origin(1_500_000).await;
    let (id, http, socks) =
        limited_port(&b, json!({"bw_quota": 1, "QUOTA_TYPE": "lifetime"})).await;
    let client = proxied_client(http, "buyer", "pw-1");
    // 1.5 MB through a 1 MB quota: cut short.
    let first = match client.get(format!("http://{origin}/")).send().await {
        Ok(reply) => reply.bytes().await.map(|b| b.len()).unwrap_or(0),
        Err(_) => 0,
    };
    assert!(
        first < 1_500_000,
        "the whole download went through: {first}"
    );
    let port = b.sim.port(&id).unwrap();
    assert!(port.over_quota);
    assert!(
        port.bytes_in <= 1_000_000,
        "forwarded past the quota: {}",
        port.bytes_in
    );
    let ports = b.get_json("/apix/list_ports_json").await;
    assert_eq!(over_quota_flag(&ports, &id), 1);

    // Both proxies refuse new traffic; the nightly counter reset does not lift a quota.
    b.sim.reset_traffic();
    let refused = client
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let target = Target::V4(Ipv4Addr::LOCALHOST, origin.port());
    let via_socks = socks5_get(socks, "buyer", "pw-1", target, "/")
        .await
        .unwrap();
    assert_eq!(via_socks, Socks::ConnectFailed(2), "not allowed by ruleset");
    assert_eq!(b.sim.port(&id).unwrap().bytes_in, 0);

    // A larger quota, stored and applied, lets traffic through again.
    let mut doc = port_doc(&b.sim.imeis()[0], &id, "buyer", "pw-1", http, socks);
    doc["bw_quota"] = json!(10);
    assert_eq!(b.store_port(&doc).await["result"], "success");
    b.get_json(&format!("/apix/apply_port?arg={id}")).await;
    let again = proxied_client(http, "buyer", "pw-1")
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap().len(), 1_500_000);
    let ports = b.get_json("/apix/list_ports_json").await;
    assert_eq!(over_quota_flag(&ports, &id), 0);
}

#[tokio::test]
async fn speed_limits_throttle_downloads_and_uploads() {
    let b = start_box(1).await;
    let (origin, _o) = bulk_origin(300_000).await;
    // 800 kbit/s = 100,000 bytes/s each way.
    let (id, http, _) = limited_port(&b, json!({"bandlimin": 800, "bandlimout": "800"})).await;
    let client = proxied_client(http, "buyer", "pw-1");
    let limit = 100_000.0;

    let started = std::time::Instant::now();
    let body = client
        .get(format!("http://{origin}/"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let rate = body.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(body.len(), 300_000);
    // Only an upper bound: a slow machine can only make it slower.
    assert!(
        rate < 2.0 * limit,
        "download at {rate:.0} B/s, limit {limit} B/s"
    );

    let started = std::time::Instant::now();
    let echoed = client
        .post(format!("http://{origin}/"))
        .body(vec![b'u'; 300_000])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rate = 300_000.0 / started.elapsed().as_secs_f64();
    assert_eq!(echoed, "300000");
    assert!(
        rate < 2.0 * limit,
        "upload at {rate:.0} B/s, limit {limit} B/s"
    );
    let port = b.sim.port(&id).unwrap();
    assert_eq!(
        (port.bandlimin.as_str(), port.bandlimout.as_str()),
        ("800", "800")
    );
}

/// The failures a buyer sees and the box's API does not: traffic leaving from another IP
/// than `EXT_IP`, slow first bytes, a proxy that accepts and never answers, a dead proxy —
/// all while the modem shows online.
#[tokio::test]
async fn a_modem_path_can_egress_elsewhere_stall_or_die_while_online() {
    use farmhand_sim::PathFault;
    let b = start_box(1).await;
    let (origin, _o) = start_origin().await;
    let imei = b.sim.imeis()[0].clone();
    let (_, http, _) = b.live_port(&imei, "buyer", "pw").await;
    let client = proxied_client(http, "buyer", "pw");
    let egress = || async {
        client
            .get(format!("http://{origin}/ip"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // A loopback EXT_IP is where traffic leaves from, as on a box whose origin sees the modem.
    b.sim.set_ext_ip(&imei, "127.0.3.7").unwrap();
    assert_eq!(egress().await, "127.0.3.7");
    b.sim.set_egress_ip(&imei, Some("127.0.3.8")).unwrap();
    assert_eq!(egress().await, "127.0.3.8");
    b.sim.set_egress_ip(&imei, None).unwrap();
    assert_eq!(egress().await, "127.0.3.7");

    b.sim
        .set_first_byte_delay(&imei, Duration::from_millis(300))
        .unwrap();
    let started = std::time::Instant::now();
    egress().await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    b.sim.set_first_byte_delay(&imei, Duration::ZERO).unwrap();

    let get = format!("GET http://{origin}/ip HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: Basic {}\r\n\r\n", basic("buyer", "pw"));
    b.sim.set_proxy_fault(&imei, PathFault::Dead).unwrap();
    let out = raw_exchange(([127, 0, 0, 1], http).into(), get.as_bytes()).await;
    assert!(
        matches!(&out, Ok(bytes) if bytes.is_empty()) || out.is_err(),
        "{out:?}"
    );
    assert!(b.sim.modems()[0].online, "the API still shows it online");

    b.sim.set_proxy_fault(&imei, PathFault::Blackhole).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", http)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(get.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
    assert!(read.is_err(), "a blackholed proxy never answers: {read:?}");

    b.sim.set_proxy_fault(&imei, PathFault::Ok).unwrap();
    assert_eq!(egress().await, "127.0.3.7");
}
