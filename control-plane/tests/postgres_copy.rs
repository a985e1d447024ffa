//! `store copy`: a plane that sold, released, reported usage and rotations, queued a command,
//! kept an audit log and delivered webhooks is stopped, and its sled store is copied into a
//! real, throw-away PostgreSQL (skipped with a printed reason when PostgreSQL is not
//! installed; never in CI): every table arrives, verified by counts and checksums read
//! back; a non-empty target is refused unless replaced; replacing gives the same database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::store::pg::{self, copy::CopyError};
use farmhand_control::store::{
    PendingCommand, ProbeRecord, ProbeTrack, QualityHour, RotationRecord, UsageTotals,
};
use farmhand_protocol::{AllocationUsage, Command, CommandBody, RotateIp, UsageReport};
use farmhand_test_support::postgres::PgCluster;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use support::flows::{allocate, release};
use support::receiver::Receiver;
use support::{eventually, TestPlane};

const IMEI: &str = "350000000000018";

#[tokio::test]
async fn a_stopped_planes_store_arrives_whole_and_verified() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let plane = TestPlane::start().await;
    let receiver = Receiver::start().await;
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.admin,
            json!({"url": receiver.url, "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let shared = Arc::new(plane);
    let mut agent = shared.agent_with_modem(IMEI).await;
    let ended = allocate(&shared, &mut agent, "o-ended").await;
    let ended_id = ended["allocation_id"].as_str().unwrap().to_string();
    release(&shared, &mut agent, &ended_id).await;
    let live = allocate(&shared, &mut agent, "o-live").await;
    let agent_id = live["agent_id"].as_str().unwrap().to_string();
    let store = shared.store().clone();
    let totals = UsageTotals {
        bytes_in: 5,
        bytes_out: 7,
        measured_at_ms: 1,
    };
    store
        .record_usage(&ended_id, &agent_id, totals)
        .await
        .unwrap();
    let report = UsageReport {
        measured_at_ms: 1_700_000_000_000,
        allocations: vec![AllocationUsage {
            allocation_id: live["allocation_id"].as_str().unwrap().to_string(),
            bytes_in: 11,
            bytes_out: 3,
        }],
    };
    let stored = store
        .record_usage_report(&agent_id, &report, u64::MAX)
        .await
        .unwrap();
    assert_eq!(stored.stored, 1);
    let rotation = RotationRecord {
        at_ms: 1_700_000_000_000,
        old_ip: Some("198.51.100.1".into()),
        new_ip: Some("198.51.100.2".into()),
        changed: true,
        automatic: false,
    };
    store
        .record_rotation(&agent_id, IMEI, &rotation)
        .await
        .unwrap();
    store.set_modem_owner(IMEI, &agent_id).await.unwrap();
    let command = Command {
        id: "cmd-queued".into(),
        deadline_ms: u64::MAX / 2,
        body: CommandBody::RotateIp(RotateIp { imei: IMEI.into() }),
    };
    store
        .put_pending_command(&PendingCommand::new(&agent_id, &command))
        .await
        .unwrap();
    let track = ProbeTrack {
        agent_id: agent_id.clone(),
        imei: IMEI.into(),
        failures_in_a_row: 0,
        degraded: None,
        results: [ProbeRecord {
            at: farmhand_control::ids::now(),
            failure: None,
            protocol: None,
            connect_ms: Some(1),
            first_byte_ms: Some(12),
            egress_ip: Some("198.51.100.2".into()),
            modem_ip: Some("198.51.100.2".into()),
            node: "nd_1".into(),
        }]
        .into(),
    };
    let live_id = live["allocation_id"].as_str().unwrap();
    assert!(store.save_probe_track(live_id, &track).await.unwrap());
    let hour = QualityHour {
        probes: 3,
        probes_ok: 2,
        latency: [0, 2, 0, 0, 0, 0, 0, 0, 0, 0],
        ..QualityHour::default()
    };
    let hours = [(agent_id.clone(), 490_000, hour)];
    assert_eq!(store.add_quality(&hours).await.unwrap(), 1);
    eventually("webhooks are delivered", || async {
        receiver.got().len() >= 3
    })
    .await;
    drop((agent, store));
    let mut plane = Arc::into_inner(shared).expect("the test is the plane's only owner");
    let dir = plane.dir.path().to_path_buf();
    plane.stop().await;

    let sled = farmhand_control::SledStore::open(&dir).unwrap();
    let target = support::postgres_store(&cluster);
    let pool = pg::connect(&target).await.unwrap();
    let copied = pg::copy::copy(&sled, &pool, false).await.unwrap();
    let rows: BTreeMap<&str, usize> = copied.iter().map(|c| (c.table, c.rows)).collect();
    for (table, at_least) in [
        ("agents", 1),
        ("api_keys", 2),
        ("enrollment_tokens", 1),
        ("allocations", 2),
        ("allocation_usage", 1),
        ("modem_rotations", 1),
        ("modem_owners", 1),
        ("pending_commands", 1),
        ("audit", 5),
        ("webhook_endpoints", 1),
        ("webhook_deliveries", 3),
        ("probe_tracks", 1),
        ("agent_quality", 1),
        ("modem_usage_days", 1),
    ] {
        assert!(rows[table] >= at_least, "{table}: {} rows", rows[table]);
    }

    // What PostgreSQL holds is the plane's: the allocation record, the audit order.
    let client = pool.get().await.unwrap();
    // Every copied record is queued for its retention window, as sled had it.
    let queued: Vec<(String, i64)> = client
        .query(
            "SELECT kind, count(*) FROM retention_queue GROUP BY kind ORDER BY kind",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for kind in [
        "credentials",
        "enrollment_token",
        "rotation",
        "webhook_delivery",
    ] {
        assert!(
            queued.iter().any(|(k, n)| k == kind && *n > 0),
            "{kind}: {queued:?}"
        );
    }
    let record: Value = client
        .query_one(
            "SELECT record FROM allocations WHERE order_id = 'o-live'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(record["allocation_id"], live["allocation_id"]);
    assert_eq!(record["state"], "active");
    let sled_audit = sled.raw_rows("audit").unwrap();
    let last: i64 = client
        .query_one("SELECT max(seq) FROM audit", &[])
        .await
        .unwrap()
        .get(0);
    let sled_last = i64::from_be_bytes(sled_audit.last().unwrap().0.clone().try_into().unwrap());
    assert_eq!(last, sled_last, "audit cursors carry over");

    // Again: refused, unless replaced — and replacing gives the same database.
    let again = pg::copy::copy(&sled, &pool, false).await.unwrap_err();
    assert!(matches!(again, CopyError::NotEmpty(_)), "{again}");
    assert!(again.to_string().contains("--replace"));
    let replaced = pg::copy::copy(&sled, &pool, true).await.unwrap();
    assert_eq!(replaced, copied);

    // The command line does the same (the store must be closed: sled locks it).
    drop(sled);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_farmhand-control"))
        .args(["store", "copy", "--tls", "disable", "--replace", "--from"])
        .arg(&dir)
        .env("FARMHAND_STORE_URL", &cluster.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("copied and verified: 15 tables"),
        "{stdout}"
    );
    let audit_line = stdout.lines().find(|l| l.starts_with("audit ")).unwrap();
    let audit = copied.iter().find(|c| c.table == "audit").unwrap();
    assert!(audit_line.contains(&audit.checksum), "{audit_line}");
}
