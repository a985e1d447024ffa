//! The OpenAPI document: generated from the code, committed as docs/openapi.json (this test
//! fails when the two differ — regenerate with `farmhand-control openapi --out
//! docs/openapi.json`), served without a key at `GET /v1/openapi.json`, and listing every
//! route the REST router serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use support::TestPlane;

fn generated() -> Value {
    serde_json::from_str(&farmhand_control::api::openapi::json()).unwrap()
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == farmhand_control::api::openapi::json(),
        "docs/openapi.json is not what the code generates: run \
         `cargo run -p farmhand-control -- openapi --out docs/openapi.json` and commit it"
    );
    let doc = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("admin") && schemes.contains_key("marketplace"));
}

#[test]
fn every_route_of_the_router_is_documented() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/mod.rs"),
    )
    .unwrap();
    let routes: BTreeSet<String> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    assert!(routes.len() > 20, "{routes:?}");
    let doc = generated();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(routes, documented, "routes and documented paths differ");
    // Every operation names its errors with the one error body.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("500"),
                "{method} {path} documents no 500"
            );
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
        }
    }
}

#[test]
fn every_reference_resolves() {
    fn walk(value: &Value, doc: &Value, refs: &mut usize) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let pointer = target.strip_prefix('#').unwrap_or(target);
                    assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
                    *refs += 1;
                }
                map.values().for_each(|v| walk(v, doc, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, doc, refs)),
            _ => {}
        }
    }
    let doc = generated();
    let mut refs = 0;
    walk(&doc, &doc, &mut refs);
    assert!(refs > 30, "only {refs} references: the walk is broken");
}

#[tokio::test]
async fn the_document_is_served_without_a_key() {
    let plane = TestPlane::start().await;
    let r = plane.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), generated());
}
