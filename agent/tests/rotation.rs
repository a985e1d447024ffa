//! IP rotation through the command executor against the ProxySmart simulator over real
//! HTTP: `rotate_ip` waits for the new address and tells a same IP from an unsettled read
//! back, and the automatic rotation scheduler (`autorotate`) rotates on schedule while the
//! port lives, reports each rotation and never overlaps a manual one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::base::clock::now_ms;
use farmhand_protocol::*;
use std::time::Duration;
use support::eventually;
use support::executor::{cmd, err, ok, provision_with, release, rotate, Agent, Setup};

#[tokio::test]
async fn rotate_ip_waits_for_the_new_address() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let before = a.sim.modem(&imei).unwrap().ext_ip;
    let CommandOutput::RotateIp(r) = ok(a.exec.execute(cmd("c1", rotate(&imei))).await) else {
        panic!()
    };
    let after = a.sim.modem(&imei).unwrap();
    assert_eq!(after.rotations, 1);
    assert_ne!(after.ext_ip, before, "the box handed out a new address");
    assert_eq!(r.old_ip.as_deref(), Some(before.as_str()));
    assert_eq!(r.new_ip.as_deref(), Some(after.ext_ip.as_str()));
    assert!(r.changed);
    assert_eq!(
        err(a.exec.execute(cmd("c2", rotate("356999999999999"))).await).code,
        CommandErrorCode::UnknownImei
    );
}

#[tokio::test]
async fn rotate_ip_tells_a_same_ip_and_an_unsettled_read_back_apart() {
    let a = Setup::default()
        .rotation_timeout(Duration::from_secs(3))
        .start()
        .await;
    let imei = a.sim.online.clone();
    let ip = a.sim.modem(&imei).unwrap().ext_ip;
    // The carrier hands back the same address: success, changed = false.
    a.sim.arm_same_ip_rotation(&imei).unwrap();
    let CommandOutput::RotateIp(same) = ok(a.exec.execute(cmd("c1", rotate(&imei))).await) else {
        panic!()
    };
    assert_eq!(same.old_ip.as_deref(), Some(ip.as_str()));
    assert_eq!(same.new_ip.as_deref(), Some(ip.as_str()));
    assert!(!same.changed);
    // The modem never shows a settled IP before the timeout: success (the reset was
    // requested), but no new IP is claimed.
    a.sim.set_rotation_delay(Duration::from_secs(3600));
    let CommandOutput::RotateIp(unsettled) = ok(a.exec.execute(cmd("c2", rotate(&imei))).await)
    else {
        panic!()
    };
    assert_eq!(unsettled.old_ip.as_deref(), Some(ip.as_str()));
    assert_eq!(unsettled.new_ip, None);
    assert!(!unsettled.changed);
    assert_eq!(a.sim.resets_of(&imei), 2);
}

#[tokio::test]
async fn automatic_rotation_runs_while_the_port_lives_and_is_reported() {
    let a = Agent::start().await;
    let imei_1 = a.sim.online.clone();
    let imei_3 = a.sim.plug_in_third();
    let ip_before = a.sim.modem(&imei_1).unwrap().ext_ip;
    let stop = tokio_util::sync::CancellationToken::new();
    let (reports, scheduler) =
        farmhand_agent::boxside::autorotate::spawn(a.ctx.clone(), stop.clone());
    ok(a.exec
        .execute(cmd("c1", provision_rotating("al-1", &imei_1, 1)))
        .await);
    let mut reports = reports.take().expect("no session holds the reports");
    let first = next_report(&mut reports).await;
    assert_eq!(first.imei, imei_1);
    assert!(first.automatic);
    assert_eq!(first.old_ip.as_deref(), Some(ip_before.as_str()));
    assert!(
        first.new_ip.is_some() && first.new_ip != first.old_ip,
        "{first:?}"
    );
    assert!(first.changed);
    assert!(first.at_ms <= now_ms() && first.at_ms + 60_000 > now_ms());
    let second = next_report(&mut reports).await;
    assert_eq!(second.imei, imei_1, "it keeps rotating on schedule");
    assert_eq!(
        second.old_ip, first.new_ip,
        "the address reported is the one the box shows"
    );

    // Releasing the port stops its schedule; another modem's schedule keeps running.
    ok(a.exec.execute(cmd("c2", release("al-1"))).await);
    let resets_at_release = a.sim.resets_of(&imei_1);
    ok(a.exec
        .execute(cmd("c3", provision_rotating("al-3", &imei_3, 1)))
        .await);
    let mut seen_3 = 0;
    while seen_3 < 2 {
        if next_report(&mut reports).await.imei == imei_3 {
            seen_3 += 1;
        }
    }
    assert!(
        a.sim.resets_of(&imei_1) <= resets_at_release + 1,
        "at most a rotation already starting when the port went"
    );
    stop.cancel();
    scheduler.await.unwrap();
}

#[tokio::test]
async fn a_manual_rotation_never_overlaps_an_automatic_one() {
    let a = Setup::default()
        .rotation_timeout(Duration::from_secs(5))
        .start()
        .await;
    let imei = a.sim.online.clone();
    // Rotations never settle: the automatic one holds the modem for the whole timeout.
    a.sim.set_rotation_delay(Duration::from_secs(3600));
    let stop = tokio_util::sync::CancellationToken::new();
    let _scheduler = farmhand_agent::boxside::autorotate::spawn(a.ctx.clone(), stop.clone());
    ok(a.exec
        .execute(cmd("c1", provision_rotating("al-1", &imei, 1)))
        .await);
    eventually("the automatic rotation starts", || {
        std::future::ready(a.sim.resets_of(&imei) == 1)
    })
    .await;
    let e = err(a.exec.execute(cmd("c2", rotate(&imei))).await);
    assert_eq!(e.code, CommandErrorCode::RotationInProgress, "{e:?}");
    assert_eq!(
        a.sim.resets_of(&imei),
        1,
        "the manual rotation did not reach ProxySmart"
    );
    stop.cancel();
}

async fn next_report(reports: &mut tokio::sync::mpsc::Receiver<RotationReport>) -> RotationReport {
    tokio::time::timeout(Duration::from_secs(30), reports.recv())
        .await
        .expect("a rotation report in time")
        .expect("the report channel is open")
}

fn provision_rotating(allocation: &str, imei: &str, every_s: u64) -> CommandBody {
    provision_with(allocation, imei, |p| p.rotate_every_s = Some(every_s))
}
