//! ProxySmart failing in the middle of a command, against the simulator over real HTTP:
//! transient 5xx on reads are retried (bounded), a persistent one is `proxysmart_unavailable`
//! after exactly the bounded attempts, a `store_port` whose outcome is unknown (timeout) is
//! never retried and leaves no port, a refused connection fails fast, and a modem that
//! vanished between the poll and the command is `unknown_imei`; each fault's precise error
//! code; and what reconcile does with the half-created port a crash leaves behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::base::backoff::PROXYSMART_READ_ATTEMPTS;
use farmhand_protocol::*;
use farmhand_sim::{Fault, WriteFault};
use std::time::{Duration, Instant};
use support::executor::{cmd, err, provision, reconcile, Agent, Setup};

/// An executor whose ProxySmart calls time out after 1 s.
fn setup() -> Setup {
    Setup::default().call_timeout(Duration::from_secs(1))
}

async fn agent() -> Agent {
    setup().start().await
}

#[tokio::test]
async fn transient_server_errors_on_reads_are_retried() {
    let a = agent().await;
    a.sim
        .set_fault(Fault::FailNext(PROXYSMART_READ_ATTEMPTS - 1));
    let result = a
        .exec
        .execute(cmd("c1", provision("al-1", &a.sim.online)))
        .await;
    assert!(matches!(result.outcome, Outcome::Ok { .. }), "{result:?}");
    assert_eq!(
        a.sim.api_calls("/apix/show_status_json"),
        PROXYSMART_READ_ATTEMPTS as usize
    );
    assert_eq!(a.sim.api_calls("/crud/store_port"), 1);
    assert_eq!(a.sim.ports().len(), 1);
}

#[tokio::test]
async fn a_persistent_server_error_fails_after_bounded_retries() {
    let a = agent().await;
    a.sim.set_fault(Fault::Status500);
    let started = Instant::now();
    let e = err(a
        .exec
        .execute(cmd("c1", provision("al-1", &a.sim.online)))
        .await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartUnavailable, "{e:?}");
    assert!(e.message.contains("HTTP 500"), "{e:?}");
    assert_eq!(
        a.sim.api_calls("/apix/show_status_json"),
        PROXYSMART_READ_ATTEMPTS as usize
    );
    assert_eq!(a.sim.api_calls("/crud/store_port"), 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "retries are bounded"
    );
}

#[tokio::test]
async fn a_store_port_with_unknown_outcome_is_not_retried_and_leaves_no_port() {
    let a = agent().await;
    a.sim.set_write_fault(Some(WriteFault::StoreThenHang));
    let e = err(a
        .exec
        .execute(cmd("c1", provision("al-1", &a.sim.online)))
        .await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartTimeout, "{e:?}");
    assert_eq!(
        a.sim.api_calls("/crud/store_port"),
        1,
        "store_port is never retried"
    );
    assert_eq!(
        a.sim.api_calls("/apix/purge_port"),
        1,
        "the unknown outcome is purged by id"
    );
    let ports = a.sim.ports();
    assert!(ports.is_empty(), "no half-created port: {ports:?}");
    // The box recovers: a new attempt for the allocation creates exactly one port.
    a.sim.set_write_fault(None);
    let result = a
        .exec
        .execute(cmd("c2", provision("al-1", &a.sim.online)))
        .await;
    assert!(matches!(result.outcome, Outcome::Ok { .. }), "{result:?}");
    assert_eq!(a.sim.ports().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_fails_fast_as_unavailable() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let exec = setup().executor(&url, dir.path());
    let started = Instant::now();
    let e = err(exec
        .execute(cmd("c1", provision("al-1", &farmhand_sim::imei(1))))
        .await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartUnavailable, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_modem_gone_between_poll_and_command_is_unknown_imei() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    a.sim.remove_modem(&imei).unwrap();
    let e = err(a.exec.execute(cmd("c1", provision("al-1", &imei))).await);
    assert_eq!(e.code, CommandErrorCode::UnknownImei, "{e:?}");
    assert!(e.message.contains(&imei));
    assert_eq!(a.sim.api_calls("/crud/store_port"), 0);
}

#[tokio::test]
async fn proxysmart_faults_map_to_precise_codes() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    a.sim.set_fault(Fault::Html);
    assert_eq!(
        err(a.exec.execute(cmd("c1", provision("al-1", &imei))).await).code,
        CommandErrorCode::ProxysmartMalformed
    );
    a.sim.set_fault(Fault::Status500);
    assert_eq!(
        err(a.exec.execute(cmd("c2", provision("al-1", &imei))).await).code,
        CommandErrorCode::ProxysmartUnavailable
    );
    // A faulted box answers everyone alike: heal it so the wrong password is what fails.
    a.sim.set_fault(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let exec = Setup::default()
        .password("wrong")
        .rotation_timeout(Duration::from_secs(5))
        .executor(&a.sim.url(), dir.path());
    let e = err(exec.execute(cmd("c3", provision("al-1", &imei))).await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartUnauthorized);
}

/// A crash between `store_port` and `apply_port` leaves a stored, dead port; when the plane
/// still wants the allocation, reconcile applies it before adopting it, and a later
/// `provision` of the allocation returns it without touching ProxySmart.
#[tokio::test]
async fn reconcile_applies_a_half_created_port_before_adopting_it() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    // Stored, never applied.
    let half = a.sim.add_foreign_port(&imei, "farmhand-al-1").unwrap();
    let result = a
        .exec
        .execute(cmd("r1", reconcile(&[("al-1", &imei)])))
        .await;
    let Outcome::Ok {
        output: CommandOutput::Reconcile(r),
    } = result.outcome
    else {
        panic!("{result:?}")
    };
    assert!(r.missing.is_empty() && r.removed.is_empty(), "{r:?}");
    assert!(a.sim.port(&half.port_id).unwrap().applied);
    let stores = a.sim.api_calls("/crud/store_port");
    let again = a.exec.execute(cmd("p1", provision("al-1", &imei))).await;
    let Outcome::Ok {
        output: CommandOutput::Provision(p),
    } = again.outcome
    else {
        panic!("{again:?}")
    };
    assert_eq!(p.port_id, half.port_id);
    assert_eq!(a.sim.api_calls("/crud/store_port"), stores);
}

/// A second port with an allocation's name (a leftover next to the journaled one) is
/// removed; the journaled port stays and the allocation is present.
#[tokio::test]
async fn reconcile_removes_a_duplicate_and_keeps_the_journaled_port() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    let first = a.exec.execute(cmd("p1", provision("al-1", &imei))).await;
    let Outcome::Ok {
        output: CommandOutput::Provision(p),
    } = first.outcome
    else {
        panic!("{first:?}")
    };
    let dup = a.sim.add_foreign_port(&imei, "farmhand-al-1").unwrap();
    let result = a
        .exec
        .execute(cmd("r1", reconcile(&[("al-1", &imei)])))
        .await;
    assert!(matches!(result.outcome, Outcome::Ok { .. }), "{result:?}");
    assert!(a.sim.port(&p.port_id).is_some(), "the journaled port stays");
    assert!(a.sim.port(&dup.port_id).is_none(), "the duplicate is gone");
    assert!(
        !a.sim
            .calls()
            .iter()
            .any(|c| c.path == "/apix/apply_port" && c.target == dup.port_id),
        "the duplicate was never applied"
    );
}

/// A half-created port that cannot be applied is removed and reported missing.
#[tokio::test]
async fn reconcile_reports_an_unusable_leftover_missing() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    a.sim.add_foreign_port(&imei, "farmhand-al-1").unwrap();
    a.sim.set_write_fault(Some(WriteFault::ApplyRefused));
    let result = a
        .exec
        .execute(cmd("r1", reconcile(&[("al-1", &imei)])))
        .await;
    let Outcome::Ok {
        output: CommandOutput::Reconcile(r),
    } = result.outcome
    else {
        panic!("{result:?}")
    };
    assert_eq!(r.missing, ["al-1"]);
    assert!(a.sim.ports().is_empty());
}
