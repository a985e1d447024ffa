//! Minimum data: nothing in Farmhand needs a buyer's personal data, and whatever a
//! marketplace types into a free-text field goes only where docs/privacy.md says that field
//! is kept. Each free-text field the API accepts gets its own e-mail address; the test then
//! searches every table of the store for each address and compares with the data map
//! (rows whose "what" cell names the field).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_test_support::{data_map_rows, eventually};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use support::agent::modem;
use support::flows::{allocate, release};
use support::receiver::Receiver;
use support::{FakeAgent, Identity, TestPlane};

const IMEI: &str = "350000000000018";

/// The tables the data map says hold `field` (its "what" cell names it).
fn mapped(field: &str) -> BTreeSet<String> {
    data_map_rows("Control plane")
        .into_iter()
        .filter(|r| r.what.contains(field))
        .filter_map(|r| r.location.strip_prefix("tree ").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn every_free_text_field_ends_up_only_where_the_data_map_says() {
    let plane = Arc::new(TestPlane::start().await);
    let receiver = Receiver::start().await;
    let hook = format!("{}?owner=hook-owner@example.com", receiver.url);
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.admin,
            json!({"url": hook, "events": ["allocation.active", "allocation.released"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = plane
        .post(
            "/v1/keys",
            &plane.admin,
            json!({"role": "marketplace", "name": "key-owner@example.com"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // An agent enrolled with a label and a hostname that are e-mail addresses.
    let r = plane
        .post(
            "/v1/enrollment-tokens",
            &plane.admin,
            json!({"label": "label-owner@example.com", "ttl_s": 3600}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_string();
    let identity = Identity::generate();
    let body = json!({"token": token, "public_key": identity.public_key_b64(),
                      "hostname": "host-owner@example.com"});
    let r = plane
        .call("POST", "/v1/agent/enroll", None, Some(&body.to_string()))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let identity = identity.with_id(r.json()["agent_id"].as_str().unwrap());
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent.send_inventory(vec![modem(IMEI, "Vodafone")]).await;
    plane.wait_available(IMEI).await;

    // A buyer's e-mail address as the order id, sold and released.
    let a = allocate(&plane, &mut agent, "buyer@example.com").await;
    release(&plane, &mut agent, a["allocation_id"].as_str().unwrap()).await;
    eventually("both events are delivered", || async {
        receiver.got().len() >= 2
    })
    .await;

    // Where each ended up, against the map.
    let store = plane.store();
    for (address, field) in [
        ("buyer@example.com", "order id"),
        ("label-owner@example.com", "label"),
        ("host-owner@example.com", "hostname"),
        ("key-owner@example.com", "key name"),
        ("hook-owner@example.com", "URL"),
    ] {
        let found: BTreeSet<String> = store
            .tables_containing(address.as_bytes())
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert!(!found.is_empty(), "{address} was not stored at all");
        let allowed = mapped(field);
        let unmapped: Vec<&String> = found.difference(&allowed).collect();
        assert!(
            unmapped.is_empty(),
            "{field} ({address}) is in {unmapped:?}, which docs/privacy.md does not say keep a {field} \
             (it says {allowed:?})"
        );
    }
    // A tenant name is an identifier, not free text: an address is refused.
    let r = plane
        .post(
            "/v1/keys",
            &plane.admin,
            json!({"role": "marketplace", "name": "k", "tenant": "someone@example.com"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
}
