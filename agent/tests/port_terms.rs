//! What a port is sold with, through the command executor against the ProxySmart simulator
//! over real HTTP: the bandwidth limit and traffic quota set at provision and sent again at
//! every renewal (`update_port`, which changes only the expiry), a box that drops the quota
//! refused rather than trusted, and the box profile noting whether the box ends a port at
//! its expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::base::clock::now_ms;
use farmhand_protocol::*;
use farmhand_sim::Quirks;
use support::executor::{cmd, err, ok, provision, provision_with, renew, update, Agent, DAY_MS};

#[tokio::test]
async fn provision_sets_the_limits_and_refuses_a_box_that_drops_the_quota() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let CommandOutput::Provision(p) = ok(a.exec.execute(cmd("c1", limited("al-1", &imei))).await)
    else {
        panic!()
    };
    let body = a.sim.last_store_body();
    assert_eq!(body["bandlimin"], 800);
    assert_eq!(body["bandlimout"], 800);
    assert_eq!(body["bw_quota"], 5);
    assert_eq!(body["QUOTA_TYPE"], "monthly");
    assert_eq!(body["QUOTA_DIRECTION"], "inout");
    let port = a.sim.port(&p.port_id).unwrap();
    assert_eq!(port.quota, "5", "verified by re-reading the port list");
    a.sim.assert_no_violations();

    // A box that stores the port but not its quota: refused, and no port is left behind.
    let a = Agent::start().await;
    a.sim.set_quirks(Quirks {
        drops_quota: true,
        ..Quirks::default()
    });
    let e = err(a.exec.execute(cmd("c1", limited("al-2", &imei))).await);
    assert_eq!(e.code, CommandErrorCode::BoxRefusedField);
    assert_eq!(e.field.as_deref(), Some("bw_quota"), "{e:?}");
    assert!(a.sim.ports().is_empty(), "the port was purged");
    // Without limits, nothing about them is sent.
    a.sim.set_quirks(Quirks::default());
    ok(a.exec.execute(cmd("c2", provision("al-3", &imei))).await);
    assert_no_limits_sent(&a);
}

#[tokio::test]
async fn update_port_changes_only_the_expiry() {
    let a = Agent::start().await;
    ok(a.exec
        .execute(cmd("c1", provision("al-1", &a.sim.online)))
        .await);
    let before = a.sim.port_named("farmhand-al-1").unwrap();
    let expires = now_ms() + 10 * DAY_MS;
    ok(a.exec.execute(cmd("c2", update("al-1", expires))).await);
    let after = a.sim.port_named("farmhand-al-1").unwrap();
    assert_ne!(after.valid_before, before.valid_before);
    assert_eq!(after.port_id, before.port_id, "portID");
    assert_eq!(after.login, before.login, "LOGIN");
    assert_eq!(after.password, before.password, "PASSWORD");
    assert_eq!(after.http_port, before.http_port, "HTTP_PORT");
    assert_eq!(after.socks_port, before.socks_port, "SOCKS_PORT");
    assert_eq!(
        err(a.exec.execute(cmd("c3", update("nope", expires))).await).code,
        CommandErrorCode::InvalidCommand
    );
}

/// The test box replaces the whole record on a re-store (the pessimistic reading of the
/// spec): a renewal that left the limits out would clear them.
#[tokio::test]
async fn update_port_sends_the_provisioned_limits_again() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    ok(a.exec.execute(cmd("c1", limited("al-1", &imei))).await);
    ok(a.exec.execute(cmd("c2", renew("al-1"))).await);
    let body = a.sim.last_store_body();
    assert_eq!(
        (&body["bandlimin"], &body["bandlimout"]),
        (&800.into(), &800.into())
    );
    assert_eq!(body["bw_quota"], 5);
    assert_eq!(body["QUOTA_TYPE"], "monthly");
    assert_eq!(body["QUOTA_DIRECTION"], "inout");
    let port = a.sim.port_named("farmhand-al-1").unwrap();
    assert_eq!(port.quota, "5", "the quota survived the renewal");

    // A box that drops the quota on the re-store: the renewal is refused, not silently
    // turned into unlimited traffic.
    a.sim.set_quirks(Quirks {
        drops_quota: true,
        ..Quirks::default()
    });
    let e = err(a.exec.execute(cmd("c3", renew("al-1"))).await);
    assert_eq!(e.code, CommandErrorCode::BoxRefusedField);
    assert_eq!(e.field.as_deref(), Some("bw_quota"), "{e:?}");

    // A port without limits is renewed without any.
    a.sim.set_quirks(Quirks::default());
    ok(a.exec.execute(cmd("c4", provision("al-2", &imei))).await);
    ok(a.exec.execute(cmd("c5", renew("al-2"))).await);
    assert_no_limits_sent(&a);
    a.sim.assert_no_violations();
}

/// Whether the box ends a port at its expiry is read from the port list: past the expiry
/// (and a grace), a box that enforces it shows `IS_EXPIRED: 1`; one that ignores it does not,
/// and the box profile says so (`enforces_expiry`), which the plane then shows.
#[tokio::test]
async fn the_box_profile_notes_whether_the_box_enforces_port_expiry() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let CommandOutput::Provision(p) =
        ok(a.exec.execute(cmd("c1", provision("al-exp", &imei))).await)
    else {
        panic!("provision output")
    };
    let ports = a.ctx.ports();
    let observe = || farmhand_agent::boxside::ports::expiry_watch::observe(ports, now_ms());
    assert_eq!(
        observe().await.unwrap(),
        None,
        "an hour left: nothing to tell yet"
    );
    // The expiry passed long ago (the test box is on UTC).
    a.sim
        .set_valid_before(&p.port_id, "2026-01-01T00:00")
        .unwrap();
    assert_eq!(observe().await.unwrap(), Some(true));
    assert_eq!(ports.profile().capabilities().enforces_expiry, Some(true));
    // The same port on a box that ignores expiry: still shown as not expired.
    a.sim.set_quirks(Quirks {
        ignores_expiry: true,
        ..Quirks::default()
    });
    assert_eq!(observe().await.unwrap(), Some(false));
    assert_eq!(ports.profile().capabilities().enforces_expiry, Some(false));
}

/// A provision with 800 kbit/s and a 5 MB quota.
fn limited(allocation: &str, imei: &str) -> CommandBody {
    provision_with(allocation, imei, |p| {
        p.bandwidth_kbit = Some(800);
        p.traffic_quota_mb = Some(5);
    })
}

/// The last `store_port` the box got carried no limit field at all.
fn assert_no_limits_sent(a: &Agent) {
    let body = a.sim.last_store_body();
    for key in [
        "bandlimin",
        "bandlimout",
        "bw_quota",
        "QUOTA_TYPE",
        "QUOTA_DIRECTION",
    ] {
        assert!(body.get(key).is_none(), "{key} sent without a limit");
    }
}
