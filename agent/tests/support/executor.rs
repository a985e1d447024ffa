//! The command executor harness of the agent's integration tests, written once: an
//! [`Agent`] is a [`TestBox`], a `CommandContext` on a journal in a temp dir and an
//! `Executor` running commands with it, built by a [`Setup`] (timeouts, policy, audit,
//! the ProxySmart password). Beside it, one builder per command body ([`provision`],
//! [`release`], [`rotate`], [`update`], [`reconcile`]), [`cmd`] to wrap one, and [`ok`] /
//! [`err`] to unwrap a result.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use super::{TestBox, PASSWORD, USER};
use farmhand_agent::base::clock::now_ms;
use farmhand_agent::boxside::commands::{CommandContext, Executor};
use farmhand_agent::boxside::proxysmart::ProxysmartClient;
use farmhand_agent::config::policy::Policy;
use farmhand_agent::local::audit::{read_recent, AuditLog};
use farmhand_agent::local::journal::Journal;
use farmhand_agent::{Masked, ProxysmartConfig};
use farmhand_protocol::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The buyer's login in every [`provision`].
pub const BUYER_LOGIN: &str = "buyer_1";
/// The buyer's password in every [`provision`] (tests assert it never leaks).
pub const BUYER_PASSWORD: &str = "Buyer-Pass-123456789";
/// One day, in milliseconds.
pub const DAY_MS: u64 = 86_400_000;

/// How to build an executor. By default: the test box's credentials, the client's own
/// timeouts, 10 s for a rotation's new IP, the default policy, no audit log.
#[derive(Clone)]
pub struct Setup {
    password: &'static str,
    call_timeout: Option<Duration>,
    rotation_timeout: Duration,
    policy: Policy,
    audit: bool,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            password: PASSWORD,
            call_timeout: None,
            rotation_timeout: Duration::from_secs(10),
            policy: Policy::default(),
            audit: false,
        }
    }
}

impl Setup {
    /// The ProxySmart password the client sends (the box's own by default).
    pub fn password(self, password: &'static str) -> Setup {
        Setup { password, ..self }
    }

    /// The connect and request timeout of every ProxySmart call.
    pub fn call_timeout(self, timeout: Duration) -> Setup {
        Setup {
            call_timeout: Some(timeout),
            ..self
        }
    }

    /// How long `rotate_ip` waits for the new IP.
    pub fn rotation_timeout(self, rotation_timeout: Duration) -> Setup {
        Setup {
            rotation_timeout,
            ..self
        }
    }

    pub fn policy(self, policy: Policy) -> Setup {
        Setup { policy, ..self }
    }

    /// Keeps an audit log in the state directory (read back by [`Agent::audited`]).
    pub fn audited(self) -> Setup {
        Setup {
            audit: true,
            ..self
        }
    }

    /// A command context against the ProxySmart at `url`, journaling (and auditing) in
    /// `state`.
    pub fn context(&self, url: &str, state: &Path) -> Arc<CommandContext> {
        let mut config = ProxysmartConfig::new(url, USER, Masked::new(self.password));
        config.rotation_timeout = self.rotation_timeout;
        if let Some(timeout) = self.call_timeout {
            config.connect_timeout = timeout;
            config.timeout = timeout;
        }
        let client = ProxysmartClient::new(&config).unwrap();
        let journal = Journal::open(state).unwrap();
        let mut builder = CommandContext::builder(client, journal, self.rotation_timeout)
            .policy(self.policy.clone());
        if self.audit {
            builder = builder.audit(AuditLog::open(state).unwrap());
        }
        Arc::new(builder.build())
    }

    /// An executor on [`Setup::context`].
    pub fn executor(&self, url: &str, state: &Path) -> Executor {
        Executor::new(self.context(url, state))
    }

    /// An agent on a fresh [`TestBox`].
    pub async fn start(self) -> Agent {
        self.on(TestBox::start().await)
    }

    /// An agent on `sim`, with a fresh state directory.
    pub fn on(self, sim: TestBox) -> Agent {
        let state = tempfile::tempdir().unwrap();
        let ctx = self.context(&sim.url(), state.path());
        Agent {
            sim,
            exec: Executor::new(ctx.clone()),
            ctx,
            state,
            setup: self,
        }
    }
}

/// An executor against a test box, on a state directory that lives as long as it.
pub struct Agent {
    pub sim: TestBox,
    pub exec: Executor,
    /// What the executor runs commands with (the scheduler and the box checks share it).
    pub ctx: Arc<CommandContext>,
    pub state: tempfile::TempDir,
    setup: Setup,
}

impl Agent {
    /// An agent with the default [`Setup`] on a fresh [`TestBox`].
    pub async fn start() -> Agent {
        Setup::default().start().await
    }

    /// Stops the executor (its journal closes with it) and starts a new one on the same
    /// state directory, as a restarted agent does.
    pub fn restart(self) -> Agent {
        let Agent {
            sim,
            exec,
            ctx,
            state,
            setup,
        } = self;
        drop((exec, ctx));
        let ctx = setup.context(&sim.url(), state.path());
        Agent {
            sim,
            exec: Executor::new(ctx.clone()),
            ctx,
            state,
            setup,
        }
    }

    /// Runs `body` as command `id`.
    pub async fn run(&self, id: &str, body: CommandBody) -> CommandResult {
        self.exec.execute(cmd(id, body)).await
    }

    /// Runs `body` as command `id` and returns its output; panics on an error.
    pub async fn ok(&self, id: &str, body: CommandBody) -> CommandOutput {
        ok(self.run(id, body).await)
    }

    /// Runs `body` as command `id` and returns its error; panics on a success.
    pub async fn err(&self, id: &str, body: CommandBody) -> CommandError {
        err(self.run(id, body).await)
    }

    /// Runs `body` as command `id`, asserts `policy_denied` and returns the message.
    pub async fn denied(&self, id: &str, body: CommandBody) -> String {
        let error = self.err(id, body).await;
        assert_eq!(
            error.code,
            CommandErrorCode::PolicyDenied,
            "{id}: {error:?}"
        );
        error.message
    }

    /// The audit's outcome for each command id, in order (a [`Setup::audited`] agent).
    pub fn audited(&self) -> Vec<(String, String)> {
        let read = read_recent(self.state.path(), 0).unwrap();
        assert_eq!(read.skipped, 0);
        read.entries
            .into_iter()
            .map(|e| (e.command_id, e.outcome))
            .collect()
    }
}

/// Command `id` carrying `body`, due in a minute.
pub fn cmd(id: &str, body: CommandBody) -> Command {
    Command {
        id: id.into(),
        deadline_ms: now_ms() + 60_000,
        body,
    }
}

/// A provision of `allocation` on `imei` for a day, as [`BUYER_LOGIN`], without limits.
pub fn provision(allocation: &str, imei: &str) -> CommandBody {
    CommandBody::Provision(Provision {
        allocation_id: allocation.into(),
        imei: imei.into(),
        login: BUYER_LOGIN.into(),
        password: Secret::new(BUYER_PASSWORD),
        expires_at_ms: now_ms() + DAY_MS,
        bandwidth_kbit: None,
        traffic_quota_mb: None,
        rotate_every_s: None,
    })
}

/// [`provision`] changed by `edit`.
pub fn provision_with(
    allocation: &str,
    imei: &str,
    edit: impl FnOnce(&mut Provision),
) -> CommandBody {
    let CommandBody::Provision(mut p) = provision(allocation, imei) else {
        unreachable!()
    };
    edit(&mut p);
    CommandBody::Provision(p)
}

pub fn release(allocation: &str) -> CommandBody {
    CommandBody::Release(Release {
        allocation_id: allocation.into(),
    })
}

pub fn rotate(imei: &str) -> CommandBody {
    CommandBody::RotateIp(RotateIp { imei: imei.into() })
}

/// A new expiry for `allocation`'s port.
pub fn update(allocation: &str, expires_at_ms: u64) -> CommandBody {
    CommandBody::UpdatePort(UpdatePort {
        allocation_id: allocation.into(),
        expires_at_ms,
    })
}

/// [`update`] to ten days from now.
pub fn renew(allocation: &str) -> CommandBody {
    update(allocation, now_ms() + 10 * DAY_MS)
}

/// A reconcile wanting each `(allocation, imei)`.
pub fn reconcile(desired: &[(&str, &str)]) -> CommandBody {
    let ports = desired
        .iter()
        .map(|(a, i)| DesiredPort {
            allocation_id: a.to_string(),
            imei: i.to_string(),
        })
        .collect();
    CommandBody::Reconcile(Reconcile { ports })
}

/// The output of a successful result; panics on an error.
pub fn ok(result: CommandResult) -> CommandOutput {
    match result.outcome {
        Outcome::Ok { output } => output,
        Outcome::Error { error } => panic!("expected success, got {error:?}"),
    }
}

/// The error of a failed result; panics on a success.
pub fn err(result: CommandResult) -> CommandError {
    match result.outcome {
        Outcome::Error { error } => error,
        Outcome::Ok { output } => panic!("expected an error, got {output:?}"),
    }
}
