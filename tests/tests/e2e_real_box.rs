//! End to end against boxes that behave like operators' live ones (spec "Second look"):
//! with each quirk of the simulator on, the real agent and plane still sell working ports —
//! allocate, the buyer's curl through HTTP and SOCKS5, renew, release, and the port is gone
//! from the box — and a slow, busy rotation still reports the new IP. Where a box cannot
//! honour an order it ends cleanly: a box that keeps its own credentials or drops an
//! unmatched pair it cannot avoid answers `box_refused_field` with zero ports left, and a
//! box that drops quotas gets no quota order while another box keeps them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{
    curl_via, enroll_agent, proxy_urls, within, Origin, Stack, StackOptions,
};
use farmhand_testkit::sim::{self, Quirks, SimConfig, SimHandle};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

fn one(name: &str) -> Quirks {
    let mut q = Quirks::default();
    q.enable(name).unwrap();
    q
}

fn with(names: &[&str]) -> Quirks {
    let mut q = Quirks::default();
    for name in names {
        q.enable(name).unwrap();
    }
    q
}

async fn stack(quirks: Quirks) -> Stack {
    let stack = Stack::start(StackOptions {
        modems: 3,
        quirks,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(3).await.unwrap();
    stack
}

/// Allocate (with `extra` order fields) → curl both ways → renew → release → nothing left.
async fn lifecycle(name: &str, stack: &Stack, extra: Value, origin: &Origin) {
    let mut order = json!({"order_id": format!("order-{name}"), "duration_s": 3600});
    for (k, v) in extra.as_object().unwrap() {
        order[k] = v.clone();
    }
    let made = stack.market.post("/v1/allocations", order).await.unwrap();
    assert_eq!(made.status, 201, "{name}: {:?}", made.body);
    let alloc = made.body;
    let (http, socks) = proxy_urls(&alloc).unwrap();
    for proxy in [&http, &socks] {
        let got = curl_via(proxy, &origin.url()).await.unwrap();
        assert!(
            got.returned(origin.body()),
            "{name}: curl via {proxy}: {got:?}"
        );
    }
    let id = alloc["allocation_id"].as_str().unwrap();
    let renewed = stack
        .market
        .post(
            &format!("/v1/allocations/{id}/renew"),
            json!({"duration_s": 7200}),
        )
        .await
        .unwrap();
    assert_eq!(renewed.status, 200, "{name}: renew: {:?}", renewed.body);
    assert!(renewed.body["expires_at"].as_str() > alloc["expires_at"].as_str());
    let got = curl_via(&http, &origin.url()).await.unwrap();
    assert!(
        got.returned(origin.body()),
        "{name}: after the renewal: {got:?}"
    );
    let released = stack
        .market
        .delete(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    assert_eq!(released.status, 200, "{name}: release: {:?}", released.body);
    assert_eq!(released.body["state"], "released");
    within(
        PATIENCE,
        &format!("{name}: the port is gone from the box"),
        || async { stack.sim.listed_ports().is_empty().then_some(()) },
    )
    .await
    .unwrap();
    assert!(
        stack.sim.ports().is_empty(),
        "{name}: {:?}",
        stack.sim.ports()
    );
    assert!(
        stack.sim.violations().is_empty(),
        "{name}: {:?}",
        stack.sim.violations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_quirk_of_live_boxes_ports_still_work() {
    let origin = Origin::start("through a real box").await.unwrap();
    let limits = json!({"traffic_quota_mb": 100, "bandwidth_kbit": 5000});
    let cases: Vec<(&str, Quirks, Value)> = vec![
        ("mixed_replies", one("mixed_replies"), json!({})),
        ("write_delay", one("write_delay"), json!({})),
        (
            "port_pools",
            with(&["port_pools", "drops_unmatched_pair"]),
            json!({}),
        ),
        ("assigns_port_id", one("assigns_port_id"), json!({})),
        (
            "quota_as_bw_quota",
            one("quota_as_bw_quota"),
            limits.clone(),
        ),
        ("expiry_minutes", one("expiry_minutes"), json!({})),
        (
            "hides_speed_limits",
            one("hides_speed_limits"),
            limits.clone(),
        ),
        ("drops_expiry", one("drops_expiry"), json!({})),
        (
            "no_json_write",
            with(&["no_json_write", "panel_login"]),
            limits.clone(),
        ),
        ("odd_imeis", one("odd_imeis"), json!({})),
        ("field_counters", one("field_counters"), json!({})),
        ("rich_status", one("rich_status"), json!({})),
        ("single_status_array", one("single_status_array"), json!({})),
        ("busy_first_reset", one("busy_first_reset"), json!({})),
        ("field", Quirks::field(), limits),
    ];
    for (name, quirks, extra) in cases {
        let stack = stack(quirks).await;
        lifecycle(name, &stack, extra, &origin).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_imeis_are_sold_by_imei() {
    let stack = stack(one("odd_imeis")).await;
    let origin = Origin::start("odd imei").await.unwrap();
    for imei in stack.sim.imeis().into_iter().filter(|i| i.len() != 15) {
        let name = format!("imei-{imei}");
        lifecycle(&name, &stack, json!({"imei": imei}), &origin).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_busy_rotation_reports_the_new_ip() {
    let stack = Stack::start(StackOptions {
        modems: 2,
        quirks: Quirks::field(),
        rotation_delay: sim::FIELD_ROTATION_DELAY,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();
    let imei = stack.sim.imeis()[0].clone();
    let before = stack.sim.modem(&imei).unwrap().ext_ip;
    let rotated = stack
        .market
        .post(&format!("/v1/modems/{imei}/rotate"), json!({}))
        .await
        .unwrap();
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(rotated.body["old_ip"], before.as_str());
    let after = stack.sim.modem(&imei).unwrap().ext_ip;
    assert_ne!(after, before);
    assert_eq!(
        rotated.body["new_ip"],
        after.as_str(),
        "judged by the IP the box shows"
    );
    assert_eq!(rotated.body["changed"], true);
    let resets: Vec<_> = stack
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.path == "/apix/reset_modem_by_imei")
        .collect();
    assert_eq!(resets.len(), 2, "asked again after \"busy\": {resets:?}");
}

/// The allocation fails with `box_refused_field`, the box keeps no port.
async fn refused_cleanly(quirks: Quirks, extra: Value, field: &str) {
    let stack = stack(quirks).await;
    let mut order = json!({"order_id": "order-refused", "duration_s": 3600});
    for (k, v) in extra.as_object().unwrap() {
        order[k] = v.clone();
    }
    let reply = stack.market.post("/v1/allocations", order).await.unwrap();
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    assert_eq!(
        reply.error_code(),
        Some("box_refused_field"),
        "{:?}",
        reply.body
    );
    let message = reply.str("/error/message").unwrap_or_default().to_string();
    assert!(message.contains(field), "{message}");
    within(PATIENCE, "no port left on the box", || async {
        stack.sim.ports().is_empty().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_cannot_sell_ends_cleanly_with_nothing_left() {
    // Keeps credentials of its own, on the JSON path and the form alike.
    refused_cleanly(one("refuses_custom_credentials"), json!({}), "proxy_login").await;
    // Drops any pair that is not matched, and has no pools to take a matched one from: the
    // JSON write vanishes, the form's pair is not matched either.
    refused_cleanly(one("drops_unmatched_pair"), json!({}), "port").await;
    // Drops the quota, and it is the only box.
    refused_cleanly(
        one("drops_quota"),
        json!({"traffic_quota_mb": 50}),
        "bw_quota",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_order_goes_to_a_box_that_keeps_quotas() {
    // The stack's own box drops quotas; a second box, with its own agent, keeps them.
    let stack = stack(one("drops_quota")).await;
    let stop = CancellationToken::new();
    let keeper = start_box(&stop).await;
    let dir = tempfile::tempdir().unwrap();
    let (keeper_id, config) = enroll_agent(
        &stack.admin,
        &stack.plane_url,
        &keeper.base_url(),
        dir.path(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let agent_stop = stop.child_token();
    let agent = tokio::spawn(farmhand_agent::run(config, agent_stop.clone()));
    stack.wait_until_available(5).await.unwrap();

    // Both boxes have free modems; the quota order may try the dropping box first, which
    // refuses, is remembered, and the order lands on the keeper — 201, not 502.
    let origin = Origin::start("quota kept").await.unwrap();
    let mut stores_after_first = 0;
    // The keeper has two modems of one slot each: two orders.
    for n in 0..2 {
        let order = json!({"order_id": format!("quota-{n}"), "duration_s": 3600,
                           "traffic_quota_mb": 50, "country": "DE"});
        let reply = stack.market.post("/v1/allocations", order).await.unwrap();
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        assert_eq!(reply.body["agent_id"], keeper_id.as_str());
        let (http, _) = proxy_urls(&reply.body).unwrap();
        assert!(curl_via(&http, &origin.url())
            .await
            .unwrap()
            .returned(origin.body()));
        if n == 0 {
            stores_after_first = stack.sim.api_calls("/crud/store_port");
        }
    }
    let stores = stack.sim.api_calls("/crud/store_port");
    assert!(
        stores <= 1,
        "the dropping box was tried at most once: {stores}"
    );
    assert_eq!(
        stores, stores_after_first,
        "once known to drop quotas, the box gets no quota order"
    );
    assert!(
        stack.sim.ports().is_empty(),
        "nothing left on the dropping box"
    );
    let agent_view = stack
        .admin
        .get(&format!("/v1/agents/{}", stack.agent_id))
        .await
        .unwrap();
    if stores == 1 {
        assert_eq!(
            agent_view.body["capabilities"]["quota"], false,
            "{:?}",
            agent_view.body
        );
    }
    // Orders without a quota are still sold on the dropping box.
    let plain = json!({"order_id": "plain", "duration_s": 3600, "imei": stack.sim.imeis()[0]});
    let reply = stack.market.post("/v1/allocations", plain).await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    agent_stop.cancel();
    agent.await.unwrap().unwrap();
}

async fn start_box(stop: &CancellationToken) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        modems: 2,
        first_modem: 10,
        rotation_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    sim::start(listener, config, stop.child_token())
        .await
        .unwrap()
}
