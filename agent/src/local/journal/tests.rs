//! The journal: results, ports and their schedules and limits, across reopens (an agent
//! restart on the same state directory), and pruning.

use super::*;
use farmhand_protocol::{CommandOutput, Outcome, Released};

fn result(id: &str) -> CommandResult {
    CommandResult {
        id: id.into(),
        outcome: Outcome::Ok {
            output: CommandOutput::Release(Released {
                allocation_id: "a".into(),
                existed: true,
            }),
        },
    }
}

fn port(alloc: &str) -> ManagedPort {
    ManagedPort {
        allocation_id: alloc.into(),
        imei: "356000000000001".into(),
        port_id: "port0123456789".into(),
        http_port: 8001,
        socks_port: 5001,
    }
}

#[tokio::test]
async fn results_and_ports_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.result("c1").unwrap(), None);
        j.record_result(&result("c1")).await.unwrap();
        j.put_port(&port("b")).await.unwrap();
        j.put_port(&port("a")).await.unwrap();
        j.put_port(&port("gone")).await.unwrap();
        j.remove_port("gone").await.unwrap();
        assert_eq!(j.box_utc_offset().unwrap(), None);
        j.put_box_utc_offset(-19_800).await.unwrap();
    }
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.box_utc_offset().unwrap(), Some(-19_800));
    assert_eq!(j.result("c1").unwrap(), Some(result("c1")));
    assert_eq!(j.port("a").unwrap(), Some(port("a")));
    assert_eq!(j.port("gone").unwrap(), None);
    let ids: Vec<String> = j
        .ports()
        .unwrap()
        .into_iter()
        .map(|p| p.allocation_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

#[tokio::test]
async fn rotation_schedules_live_and_die_with_their_port() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path()).unwrap();
        j.put_provisioned_port(&port("a"), Some(600), PortLimits::default())
            .await
            .unwrap();
        j.put_provisioned_port(&port("b"), None, PortLimits::default())
            .await
            .unwrap();
        j.put_provisioned_port(&port("c"), Some(60), PortLimits::default())
            .await
            .unwrap();
        j.remove_port("c").await.unwrap();
        j.put_last_rotation("356000000000001", 1234).await.unwrap();
    }
    let j = Journal::open(dir.path()).unwrap();
    let schedules = j.rotation_schedules().unwrap();
    assert_eq!(
        schedules,
        [RotationSchedule {
            allocation_id: "a".into(),
            imei: "356000000000001".into(),
            every_s: 600,
        }]
    );
    assert_eq!(j.port("b").unwrap(), Some(port("b")));
    assert_eq!(
        j.last_rotations().unwrap(),
        [("356000000000001".to_string(), 1234)]
    );
    // Re-journaling the port without a schedule drops it.
    j.put_provisioned_port(&port("a"), None, PortLimits::default())
        .await
        .unwrap();
    assert!(j.rotation_schedules().unwrap().is_empty());
}

#[tokio::test]
async fn limits_live_and_die_with_their_port() {
    let dir = tempfile::tempdir().unwrap();
    let limits = PortLimits {
        bandwidth_kbit: Some(800),
        traffic_quota_mb: Some(500),
    };
    let quota_only = PortLimits {
        bandwidth_kbit: None,
        traffic_quota_mb: Some(5),
    };
    {
        let j = Journal::open(dir.path()).unwrap();
        j.put_provisioned_port(&port("a"), None, limits)
            .await
            .unwrap();
        j.put_provisioned_port(&port("b"), Some(60), quota_only)
            .await
            .unwrap();
        j.put_provisioned_port(&port("c"), None, PortLimits::default())
            .await
            .unwrap();
        j.put_provisioned_port(&port("gone"), None, limits)
            .await
            .unwrap();
        j.remove_port("gone").await.unwrap();
    }
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.port_limits("a").unwrap(), Some(limits));
    assert_eq!(j.port_limits("b").unwrap(), Some(quota_only));
    assert_eq!(j.port_limits("c").unwrap(), None, "no limit: no record");
    assert_eq!(
        j.port_limits("gone").unwrap(),
        None,
        "removed with its port"
    );
    // A port journaled another way (reconcile adopting one) has no limits record.
    j.put_port(&port("d")).await.unwrap();
    assert_eq!(j.port_limits("d").unwrap(), None);
    // A later provision (a move) replaces the limits, and without any drops them.
    j.put_provisioned_port(&port("a"), None, quota_only)
        .await
        .unwrap();
    assert_eq!(j.port_limits("a").unwrap(), Some(quota_only));
    j.put_provisioned_port(&port("a"), None, PortLimits::default())
        .await
        .unwrap();
    assert_eq!(j.port_limits("a").unwrap(), None);
}

#[tokio::test]
async fn prune_removes_only_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.record_result(&result("c1")).await.unwrap();
    assert_eq!(j.prune(0).unwrap(), 0);
    assert_eq!(j.prune(now_ms() + 1000).unwrap(), 1);
    assert_eq!(j.result("c1").unwrap(), None);
}
