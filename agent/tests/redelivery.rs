//! What the journal promises the plane, through the command executor against the
//! ProxySmart simulator over real HTTP: a command id whose result is journaled is answered
//! from the journal and never reaches the box again — a rotation (not idempotent on the
//! box) stays one rotation, a provision whose port was released since is not created
//! again — also after a restart on the same state directory; and a result is on disk
//! (flushed) by the time it is answered, so a crash right after the answer keeps it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::base::clock::now_ms;
use farmhand_agent::boxside::commands::{CommandContext, Executor};
use farmhand_agent::boxside::proxysmart::ProxysmartClient;
use farmhand_agent::local::journal::Journal;
use farmhand_agent::{Masked, ProxysmartConfig};
use farmhand_protocol::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::{TestBox, PASSWORD, USER};

/// An executor on a state directory that outlives it, so the agent can be restarted.
struct Agent {
    sim: TestBox,
    exec: Executor,
    state: tempfile::TempDir,
}

impl Agent {
    async fn start() -> Agent {
        let sim = TestBox::start().await;
        let state = tempfile::tempdir().unwrap();
        let exec = executor(&sim, state.path());
        Agent { sim, exec, state }
    }

    /// Stops the executor (its journal closes with it) and starts a new one on the same
    /// state directory, as a restarted agent does.
    fn restart(self) -> Agent {
        let Agent { sim, exec, state } = self;
        drop(exec);
        let exec = executor(&sim, state.path());
        Agent { sim, exec, state }
    }

    async fn run(&self, id: &str, body: CommandBody) -> CommandResult {
        self.exec.execute(cmd(id, body)).await
    }

    /// Delivers `id` again, as the plane does after a reconnect, and asserts that the
    /// recorded `first` result is the answer and that no call reached the box.
    async fn redeliver(&self, id: &str, body: CommandBody, first: &CommandResult) {
        let calls = self.sim.all_api_calls();
        let again = self.run(id, body).await;
        assert_eq!(&again, first, "{id}: the recorded result");
        assert_eq!(self.sim.all_api_calls(), calls, "{id}: reached the box");
    }

    /// How many rotations the box counted on its online modem.
    fn rotations(&self) -> u32 {
        self.sim.modem(&self.sim.online).unwrap().rotations
    }
}

fn executor(sim: &TestBox, state: &Path) -> Executor {
    let config = ProxysmartConfig::new(sim.url(), USER, Masked::new(PASSWORD));
    let client = ProxysmartClient::new(&config).unwrap();
    let journal = Journal::open(state).unwrap();
    let ctx = CommandContext::builder(client, journal, Duration::from_secs(10)).build();
    Executor::new(Arc::new(ctx))
}

fn cmd(id: &str, body: CommandBody) -> Command {
    Command {
        id: id.into(),
        deadline_ms: now_ms() + 60_000,
        body,
    }
}

fn rotate(imei: &str) -> CommandBody {
    CommandBody::RotateIp(RotateIp { imei: imei.into() })
}

fn provision(allocation: &str, imei: &str) -> CommandBody {
    CommandBody::Provision(Provision {
        allocation_id: allocation.into(),
        imei: imei.into(),
        login: "buyer_1".into(),
        password: Secret::new("Buyer-Pass-123456789"),
        expires_at_ms: now_ms() + 86_400_000,
        bandwidth_kbit: None,
        traffic_quota_mb: None,
        rotate_every_s: None,
    })
}

fn ok(result: &CommandResult) -> &CommandOutput {
    match &result.outcome {
        Outcome::Ok { output } => output,
        Outcome::Error { error } => panic!("expected success, got {error:?}"),
    }
}

#[tokio::test]
async fn a_redelivered_rotation_is_answered_from_the_journal_and_never_rotates_again() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let first = a.run("rot-1", rotate(&imei)).await;
    let CommandOutput::RotateIp(rotated) = ok(&first) else {
        panic!("{first:?}")
    };
    assert!(rotated.changed, "{rotated:?}");
    assert_eq!((a.rotations(), a.sim.resets_of(&imei)), (1, 1));

    a.redeliver("rot-1", rotate(&imei), &first).await;
    assert_eq!(a.rotations(), 1, "not rotated again");
    // And after the agent restarted on the same state directory.
    let a = a.restart();
    a.redeliver("rot-1", rotate(&imei), &first).await;
    assert_eq!(a.rotations(), 1, "not rotated again after the restart");

    // A new command id does rotate: the restarted agent reaches the box.
    ok(&a.run("rot-2", rotate(&imei)).await);
    assert_eq!(a.rotations(), 2);
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
    let CommandOutput::Provision(p) = ok(&first) else {
        panic!("{first:?}")
    };
    assert!(a.sim.port(&p.port_id).is_some());
    a.redeliver("prov-1", body(), &first).await;
    assert_eq!(a.sim.ports().len(), 1, "no second port");

    let release = Release {
        allocation_id: "al-1".into(),
    };
    ok(&a.run("rel-1", CommandBody::Release(release)).await);
    assert!(a.sim.ports().is_empty());
    a.redeliver("prov-1", body(), &first).await;
    assert!(a.sim.ports().is_empty(), "the port was not made again");
    let a = a.restart();
    a.redeliver("prov-1", body(), &first).await;
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
