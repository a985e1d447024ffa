//! What the journal promises the plane, through the command executor against the
//! ProxySmart simulator over real HTTP: a command id whose result is journaled is answered
//! from the journal and never reaches the box again — a rotation (not idempotent on the
//! box) stays one rotation, a provision whose port was released since is not created
//! again — also after a restart on the same state directory; and a result is on disk
//! (flushed) by the time it is answered, so a crash right after the answer keeps it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::local::journal::Journal;
use farmhand_protocol::*;
use std::path::Path;
use support::executor::{cmd, ok, provision, release, rotate, Agent};

/// Delivers `id` again, as the plane does after a reconnect, and asserts that the
/// recorded `first` result is the answer and that no call reached the box.
async fn redeliver(a: &Agent, id: &str, body: CommandBody, first: &CommandResult) {
    let calls = a.sim.all_api_calls();
    let again = a.run(id, body).await;
    assert_eq!(&again, first, "{id}: the recorded result");
    assert_eq!(a.sim.all_api_calls(), calls, "{id}: reached the box");
}

/// How many rotations the box counted on its online modem.
fn rotations(a: &Agent) -> u32 {
    a.sim.modem(&a.sim.online).unwrap().rotations
}

#[tokio::test]
async fn a_redelivered_rotation_is_answered_from_the_journal_and_never_rotates_again() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let first = a.run("rot-1", rotate(&imei)).await;
    let CommandOutput::RotateIp(rotated) = ok(first.clone()) else {
        panic!("{first:?}")
    };
    assert!(rotated.changed, "{rotated:?}");
    assert_eq!((rotations(&a), a.sim.resets_of(&imei)), (1, 1));

    redeliver(&a, "rot-1", rotate(&imei), &first).await;
    assert_eq!(rotations(&a), 1, "not rotated again");
    // And after the agent restarted on the same state directory.
    let a = a.restart();
    redeliver(&a, "rot-1", rotate(&imei), &first).await;
    assert_eq!(rotations(&a), 1, "not rotated again after the restart");

    // A new command id does rotate: the restarted agent reaches the box.
    ok(a.run("rot-2", rotate(&imei)).await);
    assert_eq!(rotations(&a), 2);
    a.sim.assert_no_violations();
}

/// The allocation's port is released between the deliveries, so only the command journal
/// (not the provision's own "this allocation has a port" check) stands between the
/// redelivery and a second port on the box.
#[tokio::test]
async fn a_redelivered_provision_creates_no_port_even_after_a_release() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let body = || provision("al-1", &imei);
    let first = a.run("prov-1", body()).await;
    let CommandOutput::Provision(p) = ok(first.clone()) else {
        panic!("{first:?}")
    };
    assert!(a.sim.port(&p.port_id).is_some());
    redeliver(&a, "prov-1", body(), &first).await;
    assert_eq!(a.sim.ports().len(), 1, "no second port");

    ok(a.run("rel-1", release("al-1")).await);
    assert!(a.sim.ports().is_empty());
    redeliver(&a, "prov-1", body(), &first).await;
    assert!(a.sim.ports().is_empty(), "the port was not made again");
    let a = a.restart();
    redeliver(&a, "prov-1", body(), &first).await;
    assert!(a.sim.ports().is_empty(), "not made again after the restart");
    a.sim.assert_no_violations();
}

/// The journal is copied byte for byte the moment the answer is returned, while the agent
/// still runs: the copy holds only what was flushed (sled keeps unflushed writes in memory),
/// as a disk after a crash would.
#[tokio::test]
async fn a_result_is_on_disk_when_it_is_answered() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let commands = [
        (cmd("rot-1", rotate(&imei)), true),
        (cmd("prov-1", provision("al-1", &imei)), true),
        // Refused before anything else is journaled.
        (cmd("rot-bad", rotate("not-an-imei")), false),
    ];
    for (command, succeeds) in commands {
        let id = command.id.clone();
        let answered = a.exec.execute(command).await;
        let ok = matches!(answered.outcome, Outcome::Ok { .. });
        assert_eq!(ok, succeeds, "{answered:?}");
        let crashed = tempfile::tempdir().unwrap();
        copy_dir(&a.state.path().join("db"), &crashed.path().join("db"));
        let journal = Journal::open(crashed.path()).unwrap();
        assert_eq!(
            journal.result(&id).unwrap(),
            Some(answered),
            "{id}: the answered result is on disk"
        );
    }
    a.sim.assert_no_violations();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
