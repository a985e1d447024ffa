//! A seller's data: `GET /v1/agents/{id}/export` returns everything the plane holds about
//! one box — every record kind docs/privacy.md's data map names an export part for — and
//! nothing of the buyers, the marketplace or another seller; `POST /v1/agents/{id}/erase`
//! leaves nothing of the seller but the tombstoned financial core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::store::{
    PendingCommand, ProbeRecord, ProbeTrack, QualityHour, RotationRecord, UsageTotals,
};
use farmhand_protocol::{AllocationUsage, Command, CommandBody, RotateIp, UsageReport};
use farmhand_test_support::data_map_exports;
use serde_json::{json, Value};
use std::sync::Arc;
use support::flows::{allocate, release};
use support::{FakeAgent, TestPlane};

const IMEI_A: &str = "350000000000018";
const IMEI_B: &str = "350000000000026";

/// A plane with seller A (an ended and a live allocation, usage, a rotation, an owned
/// modem, a waiting command) and seller B (a rotation and an owned modem).
struct Market {
    plane: Arc<TestPlane>,
    a: String,
    b: String,
    ended: Value,
    live: Value,
    _agents: Vec<FakeAgent>,
}

async fn market() -> Market {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent_a = plane.agent_with_modem(IMEI_A).await;
    let ended = allocate(&plane, &mut agent_a, "o-ended").await;
    let ended_id = ended["allocation_id"].as_str().unwrap().to_string();
    let ended = release(&plane, &mut agent_a, &ended_id).await;
    let live = allocate(&plane, &mut agent_a, "o-live").await;
    let a = live["agent_id"].as_str().unwrap().to_string();
    let agent_b = plane.agent_with_modem(IMEI_B).await;
    let b = plane
        .store()
        .agents()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.agent_id)
        .find(|id| *id != a)
        .unwrap();
    let store = plane.store();
    let totals = UsageTotals {
        bytes_in: 1000,
        bytes_out: 10,
        measured_at_ms: 1,
    };
    let report = UsageReport {
        measured_at_ms: totals.measured_at_ms,
        allocations: vec![AllocationUsage {
            allocation_id: ended_id.clone(),
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
        }],
    };
    let now_ms = farmhand_control::ids::unix_ms(farmhand_control::ids::now());
    let recorded = store
        .record_usage_report(&a, &report, now_ms)
        .await
        .unwrap();
    assert_eq!(recorded.stored, 1);
    for (agent, imei) in [(&a, IMEI_A), (&b, IMEI_B)] {
        let rotation = RotationRecord {
            at_ms: farmhand_control::ids::unix_ms(farmhand_control::ids::now()),
            old_ip: Some(
                if agent == &a {
                    "198.51.100.15"
                } else {
                    "198.51.100.16"
                }
                .into(),
            ),
            new_ip: Some("198.51.100.99".into()),
            changed: true,
            automatic: false,
        };
        store.record_rotation(agent, imei, &rotation).await.unwrap();
        store.set_modem_owner(imei, agent).await.unwrap();
    }
    // What the probes found about A's live port, and both sellers' quality hours.
    let live_id = live["allocation_id"].as_str().unwrap();
    let probe = ProbeRecord {
        at: farmhand_control::ids::now(),
        failure: Some("ip_mismatch".into()),
        protocol: Some("http".into()),
        connect_ms: Some(2),
        first_byte_ms: Some(30),
        egress_ip: Some("198.51.100.77".into()),
        modem_ip: Some("198.51.100.15".into()),
        node: "nd_1".into(),
    };
    let track = ProbeTrack {
        agent_id: a.clone(),
        imei: IMEI_A.into(),
        failures_in_a_row: 1,
        degraded: None,
        results: [probe].into(),
    };
    assert!(store.save_probe_track(live_id, &track).await.unwrap());
    let hour = QualityHour {
        probes: 4,
        probes_ok: 3,
        ..QualityHour::default()
    };
    let hours = [
        (a.clone(), 500_000, hour.clone()),
        (b.clone(), 500_000, hour),
    ];
    assert_eq!(store.add_quality(&hours).await.unwrap(), 2);
    let command = Command {
        id: "cmd-waiting".into(),
        deadline_ms: u64::MAX / 2,
        body: CommandBody::RotateIp(RotateIp {
            imei: IMEI_A.into(),
        }),
    };
    store
        .put_pending_command(&PendingCommand::new(&a, &command))
        .await
        .unwrap();
    Market {
        plane,
        a,
        b,
        ended,
        live,
        _agents: vec![agent_a, agent_b],
    }
}

/// The audit entries with `action`, oldest first.
async fn audit_events(plane: &TestPlane, action: &str) -> Vec<Value> {
    let log = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

async fn export(plane: &TestPlane, agent_id: &str, query: &str) -> support::http::Response {
    plane
        .get(
            &format!("/v1/agents/{agent_id}/export{query}"),
            &plane.admin,
        )
        .await
}

#[tokio::test]
async fn the_export_holds_every_mapped_kind_and_no_buyer_or_other_seller() {
    let m = market().await;
    let r = export(&m.plane, &m.a, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = r.json();
    assert_eq!(doc["format"], "farmhand.seller-export.v1");
    assert_eq!(doc["agent"]["agent_id"], m.a.as_str());

    // Complete by the data map: every kind it maps to a part is there, with data.
    let map = data_map_exports("Control plane");
    let parts: Vec<&String> = map.values().flatten().collect();
    assert!(parts.len() >= 7, "the map names too few parts: {map:?}");
    for part in parts {
        let value = &doc[part.as_str()];
        let filled = value
            .as_array()
            .map_or(value.is_object(), |a| !a.is_empty());
        assert!(filled, "export part {part:?} is missing or empty: {value}");
    }
    let ids: Vec<&str> = doc["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["allocation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for a in [&m.ended, &m.live] {
        assert!(ids.contains(&a["allocation_id"].as_str().unwrap()));
    }
    assert_eq!(doc["modems"][0]["imei"], IMEI_A);
    assert_eq!(doc["usage"][0]["bytes_in"], 1000);
    assert_eq!(doc["pending_commands"][0]["op"], "rotate_ip");
    assert_eq!(doc["probes"][0]["reason"], "ip_mismatch");
    assert_eq!(doc["probes"][0]["egress_ip"], "198.51.100.77");
    assert_eq!(
        doc["quality"].as_array().unwrap().len(),
        1,
        "its own hours only"
    );
    assert_eq!(doc["quality"][0]["hour"], "2027-01-15T08:00:00Z");
    assert_eq!(doc["usage_days"][0]["day"], "1970-01-01");
    assert_eq!(doc["usage_days"][0]["bytes_in"], 1000);
    assert_eq!(doc["usage_days"][0]["imei"], IMEI_A);
    let audit = doc["audit"].as_array().unwrap();
    assert!(
        audit.iter().any(|e| e["action"] == "agent_enrolled"),
        "{audit:?}"
    );

    // Nothing of the buyers, the marketplace or the other seller.
    let text = r.body.clone();
    for (what, secret) in [
        ("an order id", "o-live"),
        ("an order id", "o-ended"),
        ("a buyer login", m.live["login"].as_str().unwrap()),
        ("a buyer password", m.live["password"].as_str().unwrap()),
        ("the other seller", m.b.as_str()),
        ("the other seller's modem", IMEI_B),
    ] {
        assert!(!text.contains(secret), "the export shows {what}: {secret}");
    }

    // The export is audited.
    let exported = audit_events(&m.plane, "seller_exported")
        .await
        .into_iter()
        .filter(|e| e["target"] == format!("agent:{}", m.a))
        .count();
    assert_eq!(exported, 1);
}

#[tokio::test]
async fn tabular_parts_come_as_csv_and_bad_queries_are_refused() {
    let m = market().await;
    let r = export(&m.plane, &m.a, "?part=allocations").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = r.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {lines:?}");
    assert!(
        lines[0].starts_with("allocation_id,") && lines[0].contains(",state,"),
        "{}",
        lines[0]
    );
    assert!(r.body.contains(m.live["allocation_id"].as_str().unwrap()));

    for (query, status) in [
        ("?part=agent", 422),
        ("?part=", 422),
        ("?format=csv", 422),
        ("?limit=5", 422),
    ] {
        let r = export(&m.plane, &m.a, query).await;
        assert_eq!(r.status, status, "{query}: {}", r.body);
    }
    assert_eq!(export(&m.plane, "ag_nobody", "").await.status, 404);
    let market = m
        .plane
        .get(&format!("/v1/agents/{}/export", m.a), &m.plane.market)
        .await;
    assert_eq!(
        market.status, 403,
        "a marketplace key may not export a seller"
    );
}

#[tokio::test]
async fn erasure_leaves_only_the_tombstoned_financial_core() {
    let m = market().await;
    let store = m.plane.store();
    let ended_id = m.ended["allocation_id"].as_str().unwrap();
    let live_id = m.live["allocation_id"].as_str().unwrap();
    let seller_ip = "198.51.100.15";
    assert!(!store
        .tables_containing(m.a.as_bytes())
        .await
        .unwrap()
        .is_empty());

    let r = m
        .plane
        .post(
            &format!("/v1/agents/{}/erase", m.a),
            &m.plane.admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let erased = r.json();
    let tombstone = erased["tombstone_id"].as_str().unwrap().to_string();
    assert!(tombstone.starts_with("erased_"), "{tombstone}");
    assert_eq!(erased["allocations_ended"], 1);
    assert_eq!(erased["allocations_tombstoned"], 2);

    // Nothing of the seller is left in any table: its id, its modem, its IPs.
    for needle in [m.a.as_str(), IMEI_A, seller_ip] {
        let left = store.tables_containing(needle.as_bytes()).await.unwrap();
        assert!(left.is_empty(), "{needle:?} is still in {left:?}");
    }
    // The buyer's live allocation ended cleanly; both keep their financial core.
    let live = m.plane.allocation(live_id).await;
    assert_eq!(live["state"], "released");
    assert_eq!(live["release_reason"], "agent_revoked");
    for id in [ended_id, live_id] {
        let a = m.plane.allocation(id).await;
        assert_eq!(a["agent_id"], tombstone.as_str());
        assert_eq!(a["detail_purged"], true);
        assert_eq!(a["host"], Value::Null);
        assert!(a["order_id"].as_str().unwrap().starts_with("o-"));
    }
    let usage = m
        .plane
        .get(
            &format!("/v1/allocations/{ended_id}/usage"),
            &m.plane.market,
        )
        .await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    assert!(
        usage.body.contains("1000"),
        "usage totals stay: {}",
        usage.body
    );

    // The other seller is untouched.
    assert!(store.agent(&m.b).await.unwrap().is_some());
    assert!(store.last_rotation(&m.b, IMEI_B).await.unwrap().is_some());
    assert!(store
        .modem_owners()
        .await
        .unwrap()
        .iter()
        .any(|(_, o)| *o == m.b));

    // The erasure is audited, without the erased data.
    let entry = audit_events(&m.plane, "seller_erased")
        .await
        .pop()
        .expect("a seller_erased entry");
    assert_eq!(entry["target"], format!("agent:{tombstone}"));
    assert!(!entry.to_string().contains(&m.a));

    // The box cannot come back, and a second erasure finds nobody.
    assert!(!m.plane.connected(&m.a).await);
    let again = m
        .plane
        .post(
            &format!("/v1/agents/{}/erase", m.a),
            &m.plane.admin,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(export(&m.plane, &m.a, "").await.status, 404);
}
