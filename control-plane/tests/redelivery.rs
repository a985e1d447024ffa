//! Commands survive disconnects and restarts: a command the agent did not answer is
//! redelivered with the same id when it reconnects (also after a plane restart), fails
//! clearly past its deadline, and `reconcile`'s `missing` list is repaired with the same
//! credentials (or the allocation fails when the agent cannot re-create the port). Late
//! answers to a replacement never move the record (`replace`). A revoked agent's outbox is
//! emptied at once and what waits on it fails at once. A release the agent refuses is sent
//! again while it stays connected, until it succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{
    CommandBody, CommandError, CommandErrorCode, CommandOutput, Outcome, Provisioned, Released,
};
use serde_json::json;
use std::sync::Arc;
use support::flows::{allocate, order, post_allocation, reconnect_missing};
use support::{eventually, modem, FakeAgent, TestPlane};

const IMEI: &str = "350000000000018";

async fn online_agent(plane: &TestPlane) -> (support::Identity, FakeAgent) {
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(plane, &identity).await.unwrap();
    agent.send_inventory(vec![modem(IMEI, "Vodafone")]).await;
    plane.wait_available(IMEI).await;
    (identity, agent)
}

#[tokio::test]
async fn an_unanswered_provision_is_redelivered_with_the_same_id_after_a_reconnect() {
    let plane = Arc::new(TestPlane::start_with(|c| c.provisioning_timeout_s = 30).await);
    let (identity, mut agent) = online_agent(&plane).await;
    let pending = post_allocation(&plane, order("o-redeliver"));
    let first = agent.next_command().await;
    let CommandBody::Provision(p1) = first.body.clone() else {
        panic!("expected provision, got {first:?}")
    };
    assert_eq!(
        plane
            .store()
            .pending_commands(&identity.agent_id)
            .await
            .unwrap()
            .len(),
        1,
        "the command is in the durable outbox"
    );
    drop(agent);
    plane.wait_disconnected(&identity.agent_id).await;

    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    let again = agent.next_command().await;
    assert_eq!(
        (&again.id, again.deadline_ms),
        (&first.id, first.deadline_ms)
    );
    let CommandBody::Provision(p2) = again.body else {
        panic!("expected provision, got {again:?}")
    };
    assert_eq!(
        (&p2.allocation_id, &p2.login, p2.password.expose()),
        (&p1.allocation_id, &p1.login, p1.password.expose()),
        "the redelivered provision carries the same credentials"
    );
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: p2.allocation_id.clone(),
        imei: IMEI.into(),
        port_id: "port1".into(),
        http_port: 8001,
        socks_port: 5001,
    });
    agent.answer(&again.id, Outcome::Ok { output }).await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["password"], json!(p1.password.expose()));
    eventually("the answered command leaves the outbox", || async {
        plane
            .store()
            .pending_commands(&identity.agent_id)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_command_past_its_deadline_fails_clearly_and_is_not_redelivered() {
    let plane = Arc::new(TestPlane::start_with(|c| c.provisioning_timeout_s = 2).await);
    let (identity, mut agent) = online_agent(&plane).await;
    let pending = post_allocation(&plane, order("o-deadline"));
    let first = agent.next_command().await;
    assert!(matches!(first.body, CommandBody::Provision(_)));
    drop(agent);
    let r = pending.await.unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (504, "agent_timeout"));
    assert!(r.body.contains("deadline"), "a clear reason: {}", r.body);
    let list = plane
        .get("/v1/allocations?order_id=o-deadline", &plane.market)
        .await
        .json();
    assert_eq!(list["allocations"][0]["state"], "failed");
    assert_eq!(list["allocations"][0]["release_reason"], "failed");
    assert!(plane
        .store()
        .pending_commands(&identity.agent_id)
        .await
        .unwrap()
        .is_empty());

    // Back after the deadline: the failed allocation is not desired (its port, if any, is
    // removed by reconcile) and the provision is not sent again.
    plane.wait_disconnected(&identity.agent_id).await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    let reconcile = agent.next_any_command().await;
    let CommandBody::Reconcile(desired) = &reconcile.body else {
        panic!("expected reconcile first, got {reconcile:?}")
    };
    assert!(desired.ports.is_empty(), "{desired:?}");
}

#[tokio::test]
async fn a_missing_port_is_recreated_with_the_same_credentials() {
    let plane = Arc::new(TestPlane::start().await);
    let (identity, mut agent) = online_agent(&plane).await;
    let a = allocate(&plane, &mut agent, "o-repair").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let mut agent = reconnect_missing(&plane, &identity, agent, IMEI, &id).await;

    let repair = agent.next_command().await;
    let CommandBody::Provision(p) = repair.body else {
        panic!("expected provision, got {repair:?}")
    };
    assert_eq!(p.allocation_id, id);
    assert_eq!(json!(p.login), a["login"]);
    assert_eq!(json!(p.password.expose()), a["password"]);
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: id.clone(),
        imei: IMEI.into(),
        port_id: "port2".into(),
        http_port: 8002,
        socks_port: 5002,
    });
    agent.answer(&repair.id, Outcome::Ok { output }).await;
    eventually("the new ports are stored", || async {
        plane.allocation(&id).await["http_port"] == 8002
    })
    .await;
    let now = plane.allocation(&id).await;
    assert_eq!(
        (&now["state"], &now["socks_port"], &now["password"]),
        (&json!("active"), &json!(5002), &a["password"])
    );
}

#[tokio::test]
async fn a_repaired_port_keeps_its_speed_limit_and_what_is_left_of_its_quota() {
    let plane = Arc::new(TestPlane::start().await);
    let (identity, mut agent) = online_agent(&plane).await;
    let mut body = order("o-repair-limits");
    body["bandwidth_kbit"] = json!(2000);
    body["traffic_quota_mb"] = json!(50);
    let pending = post_allocation(&plane, body);
    let id = support::flows::provision_ok(&mut agent).await;
    assert_eq!(pending.await.unwrap().status, 201);
    // 20.5 MB went through the lost port: the new one gets what is left, rounded against
    // the buyer (29 MB), since a new port starts a new counter on the box.
    let usage = farmhand_protocol::UsageReport {
        measured_at_ms: 1,
        allocations: vec![farmhand_protocol::AllocationUsage {
            allocation_id: id.clone(),
            bytes_in: 20_000_000,
            bytes_out: 500_000,
        }],
    };
    agent
        .send(&farmhand_protocol::AgentMessage::Usage(usage))
        .await;
    let path = format!("/v1/allocations/{id}/usage");
    eventually("the usage is stored", || async {
        plane.get(&path, &plane.market).await.json()["bytes_in"] == 20_000_000
    })
    .await;
    let mut agent = reconnect_missing(&plane, &identity, agent, IMEI, &id).await;
    let repair = agent.next_command().await;
    let CommandBody::Provision(p) = repair.body else {
        panic!("expected provision, got {repair:?}")
    };
    assert_eq!(p.allocation_id, id);
    assert_eq!(
        (p.bandwidth_kbit, p.traffic_quota_mb),
        (Some(2000), Some(29))
    );
}

#[tokio::test]
async fn a_port_that_cannot_be_recreated_fails_the_allocation() {
    let plane = Arc::new(TestPlane::start().await);
    let (identity, mut agent) = online_agent(&plane).await;
    let a = allocate(&plane, &mut agent, "o-repair-fails").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let mut agent = reconnect_missing(&plane, &identity, agent, IMEI, &id).await;

    let repair = agent.next_command().await;
    assert!(matches!(&repair.body, CommandBody::Provision(p) if p.allocation_id == id));
    let error = CommandError::new(CommandErrorCode::NoFreePorts, "no free TCP ports");
    agent.answer(&repair.id, Outcome::Error { error }).await;
    eventually("the allocation fails", || async {
        plane.allocation(&id).await["state"] == "failed"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "failed");
    // Its slot is free again for a new allocation.
    plane.wait_available(IMEI).await;
}

#[tokio::test]
async fn a_release_in_flight_survives_a_plane_restart_and_is_redelivered() {
    let mut plane = Arc::new(TestPlane::start().await);
    let (identity, mut agent) = online_agent(&plane).await;
    let a = allocate(&plane, &mut agent, "o-restart").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let (p, path) = (plane.clone(), format!("/v1/allocations/{id}"));
    let deleting = tokio::spawn(async move { p.delete(&path, &p.market).await });
    let release = agent.next_command().await;
    assert!(matches!(&release.body, CommandBody::Release(r) if r.allocation_id == id));
    drop(agent); // never answers
    let r = deleting.await.unwrap();
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (202, json!("releasing"))
    );
    plane.wait_disconnected(&identity.agent_id).await;

    Arc::get_mut(&mut plane)
        .expect("no other handle")
        .restart()
        .await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    let again = agent.next_command().await;
    assert_eq!(again.id, release.id, "the same command, redelivered");
    let output = CommandOutput::Release(Released {
        allocation_id: id.clone(),
        existed: true,
    });
    agent.answer(&again.id, Outcome::Ok { output }).await;
    eventually("the release completes after the restart", || async {
        plane.allocation(&id).await["state"] == "released"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "cancelled");
}

/// Revoking an agent drops its queued commands at once (before the 204) and wakes what
/// waits on them: a `provision` the offline agent never answered fails now with 504, not at
/// its (long) deadline; a `release` it never answered ends the allocation `released`. A
/// command a crash left in a revoked agent's outbox is dropped when the plane opens.
#[tokio::test]
async fn revoking_an_agent_empties_its_outbox_and_fails_what_waits_on_it_at_once() {
    let mut plane = Arc::new(
        TestPlane::start_with(|c| {
            // Far beyond PATIENCE: a waiter left until its deadline fails the test.
            c.provisioning_timeout_s = 600;
            c.command_timeout_s = 600;
            c.modem_capacity = 2;
        })
        .await,
    );
    let (identity, mut agent) = online_agent(&plane).await;
    let agent_id = identity.agent_id.clone();
    let active = allocate(&plane, &mut agent, "o-active").await;
    let active = active["allocation_id"].as_str().unwrap().to_string();
    let (p, path) = (plane.clone(), format!("/v1/allocations/{active}"));
    let deleting = tokio::spawn(async move { p.delete(&path, &p.market).await });
    assert!(matches!(
        agent.next_command().await.body,
        CommandBody::Release(_)
    ));
    let provisioning = post_allocation(&plane, order("o-pending"));
    assert!(matches!(
        agent.next_command().await.body,
        CommandBody::Provision(_)
    ));
    assert_eq!(
        plane
            .store()
            .pending_commands(&agent_id)
            .await
            .unwrap()
            .len(),
        2
    );
    drop(agent); // never answers either
    plane.wait_disconnected(&agent_id).await;
    let r = deleting.await.unwrap();
    assert_eq!((r.status, &r.json()["state"]), (202, &json!("releasing")));
    assert!(
        !provisioning.is_finished(),
        "a provision waits across a disconnect: the agent might come back"
    );

    let r = plane
        .delete(&format!("/v1/agents/{agent_id}"), &plane.admin)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(
        plane
            .store()
            .pending_commands(&agent_id)
            .await
            .unwrap()
            .is_empty(),
        "the outbox is emptied before the 204"
    );
    let r = tokio::time::timeout(support::PATIENCE, provisioning)
        .await
        .expect("the provision's caller is answered at once, not at its deadline")
        .unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (504, "agent_timeout".to_string())
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{}",
        r.body
    );
    let r = plane
        .get("/v1/allocations?order_id=o-pending", &plane.market)
        .await;
    let failed = &r.json()["allocations"][0];
    assert_eq!(failed["state"], json!("failed"), "{failed}");
    eventually("the releasing allocation is released", || async {
        plane.allocation(&active).await["state"] == "released"
    })
    .await;
    assert_eq!(
        plane.allocation(&active).await["release_reason"],
        "cancelled"
    );

    // A crash between the revocation and the purge left a command queued: it goes at open.
    let release = farmhand_protocol::Command {
        id: "c_left".into(),
        deadline_ms: u64::MAX,
        body: CommandBody::Release(farmhand_protocol::Release {
            allocation_id: active.clone(),
        }),
    };
    let left = farmhand_control::store::PendingCommand::new(&agent_id, &release);
    plane.store().put_pending_command(&left).await.unwrap();
    Arc::get_mut(&mut plane)
        .expect("no other handle")
        .restart()
        .await;
    assert!(plane
        .store()
        .pending_commands(&agent_id)
        .await
        .unwrap()
        .is_empty());
}

/// The plane's side of replacement with two fake agents: a refusing target is skipped for
/// the next one, a silent one stops the attempt (504) and its late answer never moves the
/// record — another agent's late port is released, the own agent's late move is put back —
/// a move on the same agent sends no `release`, a move to another agent releases the old
/// port on the connected old agent.
#[tokio::test]
async fn replacement_across_agents_survives_refusals_timeouts_and_late_answers() {
    const I1: &str = "350000000000101";
    const I2: &str = "350000000000202";
    const I3: &str = "350000000000303";
    let plane = Arc::new(
        TestPlane::start_with(|c| {
            c.provisioning_timeout_s = 2;
            c.replacement_grace_s = 0;
        })
        .await,
    );
    let identity = plane.enroll().await;
    let mut a = FakeAgent::connect(&plane, &identity).await.unwrap();
    a.send_inventory(vec![modem(I1, "Vodafone"), modem(I3, "Vodafone")])
        .await;
    plane.wait_available(I3).await;
    let mut b = plane.agent_with_modem(I2).await;
    let pinned = json!({"order_id": "o-move", "duration_s": 86_400, "imei": I1});
    let created = post_allocation(&plane, pinned);
    let first = answer_provision(&mut a, I1, 8001).await;
    let before = created.await.unwrap().json();
    let id = before["allocation_id"].as_str().unwrap().to_string();
    let replace = || {
        let (p, path) = (plane.clone(), format!("/v1/allocations/{id}/replace"));
        tokio::spawn(async move { p.post(&path, &p.market, json!({})).await })
    };

    // Same agent first: it refuses, so the other agent is tried; that one stays silent.
    let pending = replace();
    let to_a = a.next_command().await;
    let CommandBody::Provision(p) = &to_a.body else {
        panic!("expected provision, got {to_a:?}")
    };
    assert_eq!((p.imei.as_str(), &p.allocation_id), (I3, &id));
    assert_eq!(
        (&p.login, p.password.expose()),
        (&first.login, first.password.expose())
    );
    let offline = CommandError::new(CommandErrorCode::ModemOffline, "modem is offline");
    a.answer(&to_a.id, Outcome::Error { error: offline }).await;
    let to_b = b.next_command().await;
    let r = pending.await.unwrap();
    assert_eq!(
        (r.status, r.error_code()),
        (504, "agent_timeout".to_string())
    );
    // Its late port is an orphan: released, and the record does not move.
    b.answer(&to_b.id, provisioned(&id, I2, 9001)).await;
    let release = b.next_command().await;
    assert!(matches!(&release.body, CommandBody::Release(r) if r.allocation_id == id));
    let unchanged = plane.allocation(&id).await;
    assert_eq!(
        (
            &unchanged["state"],
            &unchanged["imei"],
            &unchanged["http_port"]
        ),
        (&json!("active"), &json!(I1), &json!(8001))
    );

    // The own agent answers a move late: the plane asks it to put the port back.
    let pending = replace();
    let slow = a.next_command().await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    a.answer(&slow.id, provisioned(&id, I3, 8003)).await;
    let back = answer_provision(&mut a, I1, 8011).await;
    assert_eq!(back.allocation_id, id);
    eventually("the put-back port stored", || async {
        plane.allocation(&id).await["http_port"] == 8011
    })
    .await;

    // A move on the same agent: 200, and no release (the agent moved the port itself).
    let pending = replace();
    answer_provision(&mut a, I3, 8003).await;
    let moved = pending.await.unwrap();
    assert_eq!(moved.status, 200, "{}", moved.body);
    let moved = moved.json();
    assert_eq!(
        (&moved["state"], &moved["imei"]),
        (&json!("replaced"), &json!(I3))
    );
    assert_eq!(moved["password"], before["password"]);

    // Nothing free on the first agent: the move goes to the other one, and the first
    // (connected) releases the old port.
    let mut down = modem(I1, "Vodafone");
    down.online = false;
    a.send_inventory(vec![down, modem(I3, "Vodafone")]).await;
    eventually("modem 1 offline", || async {
        plane
            .get(&format!("/v1/modems?imei={I1}&online=false"), &plane.admin)
            .await
            .json()["modems"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    })
    .await;
    let pending = replace();
    answer_provision(&mut b, I2, 9002).await;
    let across = pending.await.unwrap().json();
    assert_eq!(
        (&across["agent_id"], &across["imei"]),
        (&json!(b.agent_id), &json!(I2))
    );
    let history = across["replacements"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["from_agent_id"], identity.agent_id.as_str());
    assert_eq!(history[1]["to_agent_id"], b.agent_id.as_str());
    let old = a.next_command().await;
    assert!(matches!(&old.body, CommandBody::Release(r) if r.allocation_id == id));
    let released = CommandOutput::Release(Released {
        allocation_id: id.clone(),
        existed: true,
    });
    a.answer(&old.id, Outcome::Ok { output: released }).await;
    let after = plane.allocation(&id).await;
    assert_eq!(
        (&after["state"], &after["http_port"]),
        (&json!("replaced"), &json!(9002))
    );
}

/// Answers the next command, which must be a `provision` on `imei`, with `http_port`.
async fn answer_provision(
    agent: &mut FakeAgent,
    imei: &str,
    http_port: u16,
) -> farmhand_protocol::Provision {
    let command = agent.next_command().await;
    let CommandBody::Provision(p) = command.body else {
        panic!("expected provision, got {command:?}")
    };
    assert_eq!(p.imei, imei);
    agent
        .answer(&command.id, provisioned(&p.allocation_id, imei, http_port))
        .await;
    p
}

fn provisioned(allocation_id: &str, imei: &str, http_port: u16) -> Outcome {
    Outcome::Ok {
        output: CommandOutput::Provision(Provisioned {
            allocation_id: allocation_id.into(),
            imei: imei.into(),
            port_id: format!("port{http_port}"),
            http_port,
            socks_port: http_port + 1000,
        }),
    }
}

#[tokio::test]
async fn a_release_the_box_refuses_is_retried_while_the_agent_stays_connected() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem("350000000000018").await;
    let session = agent.welcome.session_id.clone();
    let allocation = allocate(&plane, &mut agent, "o-stubborn").await;
    let id = allocation["allocation_id"].as_str().unwrap().to_owned();
    let mut deleting = Some({
        let (p, path) = (plane.clone(), format!("/v1/allocations/{id}"));
        tokio::spawn(async move { p.delete(&path, &p.market).await })
    });
    // The box refuses twice, then removes the port; the agent never reconnects.
    for attempt in 1..=3 {
        let command = tokio::time::timeout(support::PATIENCE, agent.next_command())
            .await
            .unwrap_or_else(|_| panic!("release attempt {attempt} never came"));
        let CommandBody::Release(r) = &command.body else {
            panic!("expected release, got {command:?}")
        };
        assert_eq!(r.allocation_id, id);
        let outcome = if attempt < 3 {
            Outcome::Error {
                error: CommandError::new(CommandErrorCode::ProxysmartUnavailable, "box busy"),
            }
        } else {
            Outcome::Ok {
                output: CommandOutput::Release(Released {
                    allocation_id: id.clone(),
                    existed: true,
                }),
            }
        };
        agent.answer(&command.id, outcome).await;
        if let Some(deleting) = deleting.take() {
            let r = deleting.await.unwrap();
            assert_eq!((r.status, r.error_code().as_str()), (502, "release_failed"));
        }
    }
    eventually("the release finished", || async {
        let r = plane
            .get(&format!("/v1/allocations/{id}"), &plane.market)
            .await;
        r.json()["state"] == "released"
    })
    .await;
    assert_eq!(
        agent.welcome.session_id, session,
        "the same session throughout"
    );
    assert!(plane.gateway().is_connected(&agent.agent_id));
}
