//! Buyer credentials at rest: never in clear in the data directory (before and after a
//! restart, which must still open them), and purged after the retention period — the
//! allocation keeps its other fields, the API shows `password: null` and
//! `credentials_purged: true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{CommandBody, CommandError, CommandErrorCode, Outcome};
use serde_json::Value;
use std::sync::Arc;
use support::flows::{allocate, order, post_allocation, release};
use support::{eventually, files_containing, FakeAgent, TestPlane};

async fn show(plane: &TestPlane, allocation_id: &str) -> Value {
    let r = plane
        .get(&format!("/v1/allocations/{allocation_id}"), &plane.market)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn agent_with_modems(plane: &TestPlane, imeis: &[&str]) -> FakeAgent {
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(plane, &identity).await.unwrap();
    let modems = imeis
        .iter()
        .map(|i| support::modem(i, "Vodafone"))
        .collect();
    agent.send_inventory(modems).await;
    for imei in imeis {
        plane.wait_available(imei).await;
    }
    agent
}

#[tokio::test]
async fn buyer_passwords_never_reach_the_disk_in_clear_across_a_restart() {
    let mut plane = Arc::new(TestPlane::start().await);
    let mut agent = agent_with_modems(&plane, &["350000000000018"]).await;
    let alloc = allocate(&plane, &mut agent, "o-disk").await;
    let id = alloc["allocation_id"].as_str().unwrap().to_string();
    let password = alloc["password"].as_str().unwrap().to_string();
    assert_eq!(alloc["credentials_purged"], false);
    drop(agent);
    let plane = Arc::get_mut(&mut plane).expect("the test is the plane's only owner");

    plane.restart().await;
    let after = show(plane, &id).await;
    assert_eq!(
        after["password"],
        password.as_str(),
        "opens after a restart"
    );
    assert_eq!(after["login"], alloc["login"]);
    plane.stop().await;
    let found = files_containing(plane.dir.path(), password.as_bytes());
    assert!(found.is_empty(), "buyer password in clear in {found:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = plane.dir.path().join("credentials.key");
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn credentials_are_purged_after_the_retention_period() {
    // An hour's retention, crossed on the plane's manual clock.
    let clock = farmhand_control::clock::Clock::manual();
    let plane =
        Arc::new(TestPlane::start_on(clock.clone(), |c| c.retention.credentials_s = 3600).await);
    let imeis = ["350000000000018", "350000000000026", "350000000000034"];
    let mut agent = agent_with_modems(&plane, &imeis).await;
    let kept = allocate(&plane, &mut agent, "o-kept").await;
    let gone = allocate(&plane, &mut agent, "o-gone").await;
    let gone_id = gone["allocation_id"].as_str().unwrap().to_string();
    let released = release(&plane, &mut agent, &gone_id).await;
    assert!(
        released["password"].is_string(),
        "kept until the period is over"
    );
    // A failed allocation's credentials go too.
    let failing = post_allocation(&plane, order("o-failed"));
    let command = agent.next_command().await;
    let CommandBody::Provision(p) = command.body else {
        panic!("expected provision")
    };
    let error = CommandError::new(CommandErrorCode::ModemOffline, "modem went away");
    agent.answer(&command.id, Outcome::Error { error }).await;
    assert_eq!(failing.await.unwrap().status, 502);

    clock.advance(std::time::Duration::from_secs(3600));
    for id in [&gone_id, &p.allocation_id] {
        eventually("the credentials are purged", || async {
            show(&plane, id).await["credentials_purged"] == true
        })
        .await;
    }
    let after = show(&plane, &gone_id).await;
    assert_eq!(after["password"], Value::Null);
    for field in [
        "allocation_id",
        "order_id",
        "state",
        "imei",
        "agent_id",
        "host",
        "http_port",
        "socks_port",
        "login",
        "created_at",
        "expires_at",
        "released_at",
        "release_reason",
    ] {
        assert_eq!(after[field], released[field], "{field}");
    }
    assert!(plane
        .store()
        .allocation(&gone_id)
        .await
        .unwrap()
        .unwrap()
        .password_sealed
        .is_none());
    // The live allocation keeps its password.
    let live = show(&plane, kept["allocation_id"].as_str().unwrap()).await;
    assert_eq!(live["password"], kept["password"]);
    assert_eq!(live["credentials_purged"], false);
    let r = plane.get("/v1/audit?limit=1000", &plane.admin).await;
    let purged = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credentials_purged")
        .count();
    assert_eq!(purged, 2);
}

#[tokio::test]
async fn rotating_the_credential_key_keeps_every_password_readable() {
    let mut plane = Arc::new(TestPlane::start().await);
    let mut agent = agent_with_modems(&plane, &["350000000000018"]).await;
    let alloc = allocate(&plane, &mut agent, "o-rekey").await;
    let id = alloc["allocation_id"].as_str().unwrap().to_string();
    drop(agent);
    let plane = Arc::get_mut(&mut plane).expect("the test is the plane's only owner");
    let dir = plane.dir.path().to_path_buf();
    let refused = farmhand_control::rekey::rotate_credential_key(&dir);
    assert!(refused.is_err(), "refused while the plane runs");

    plane.stop().await;
    let old_key = std::fs::read(dir.join("credentials.key")).unwrap();
    let count = farmhand_control::rekey::rotate_credential_key(&dir).unwrap();
    assert_eq!(count, 1);
    assert_ne!(std::fs::read(dir.join("credentials.key")).unwrap(), old_key);
    assert!(!dir.join("credentials.key.old").exists());

    plane.restart().await;
    let after = show(plane, &id).await;
    assert_eq!(after["password"], alloc["password"]);
    let r = plane.get("/v1/audit?limit=1000", &plane.admin).await;
    assert!(r.body.contains("\"credential_key_rotated\""), "{}", r.body);
}
