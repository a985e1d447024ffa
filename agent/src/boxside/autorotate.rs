//! Automatic IP rotation: ONE named task that rotates each modem carrying a journaled port
//! whose allocation asked for `rotate_every_s`, and queues a [`RotationReport`] for the
//! plane after each rotation (sent by the session as `rotated`, kept while disconnected).
//!
//! Rules:
//! - Rotation is per modem: a modem is rotated at the **shortest** interval asked among its
//!   ports. The clock of a modem starts when its first schedule appears (a new port, or the
//!   agent starting), so a buyer's first minutes are never cut short, and every rotation of
//!   the modem — manual ones included — restarts it.
//! - The seller's policy wins: `min_rotation_interval_s` is a floor (a faster schedule is
//!   **clamped** to it and the agent logs so, never dropped), `allow.rotate_ip = false`
//!   switches automatic rotation off too, and excluded modems are never touched.
//! - A rotation uses the same code and the same per-modem gate as `rotate_ip`
//!   (`commands::rotate_ip::rotate`), so it never overlaps a manual rotation of the modem.
//! - It sits above `commands`: a provision wakes it through
//!   `CommandContext::schedules_changed`, and it hands its reports to the session through
//!   the [`RotationReports`] that [`spawn`] returns.
//! - It stops when the port is released: schedules live in the journal with their port
//!   and are read again before every round. A failed attempt is retried after
//!   [`RETRY_AFTER_FAILURE`] (or the interval, if shorter).
//! - Every attempt is written to the seller's local audit (command id `auto-rotate`).

use crate::boxside::commands::{rotate_ip, CommandContext};
use crate::config::policy::Policy;
use crate::local::journal::RotationSchedule;
use farmhand_protocol::{
    Command, CommandBody, CommandError, CommandOutput, Outcome, RotateIp, Rotated, RotationReport,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex, MutexGuard};
use tokio::task::{Id, JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reports waiting for a session; when this many wait, newer ones are dropped (logged).
pub const REPORT_BACKLOG: usize = 256;
/// Longest wait before a failed automatic rotation is tried again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Re-read the journal this often when it could not be read.
const JOURNAL_RETRY: Duration = Duration::from_secs(30);
/// The command id automatic rotations are audited under.
const AUDIT_ID: &str = "auto-rotate";

/// The reports of automatic rotations waiting for the plane. The session that holds them
/// sends them; those made while no session is open wait (up to [`REPORT_BACKLOG`]).
#[derive(Debug, Clone)]
pub struct RotationReports {
    rx: Arc<Mutex<mpsc::Receiver<RotationReport>>>,
}

impl RotationReports {
    /// Reports that never come (tests, and agents without the scheduler).
    pub fn none() -> Self {
        let (_tx, rx) = mpsc::channel(1);
        RotationReports {
            rx: Arc::new(Mutex::new(rx)),
        }
    }

    /// The reports; `None` while another session holds them.
    pub fn take(&self) -> Option<MutexGuard<'_, mpsc::Receiver<RotationReport>>> {
        self.rx.try_lock().ok()
    }
}

/// Starts the scheduler on `ctx`; it stops when `shutdown` is cancelled (a rotation in
/// flight is abandoned: the modem finishes it on its own). Returns where its reports wait.
pub fn spawn(
    ctx: Arc<CommandContext>,
    shutdown: CancellationToken,
) -> (RotationReports, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(REPORT_BACKLOG);
    let reports = RotationReports {
        rx: Arc::new(Mutex::new(rx)),
    };
    (reports, tokio::spawn(Scheduler::new(ctx, tx).run(shutdown)))
}

/// Per modem, the interval to keep: the shortest asked, clamped up to the policy's floor.
/// Excluded modems have none.
pub fn intervals(schedules: &[RotationSchedule], policy: &Policy) -> BTreeMap<String, Interval> {
    let mut out: BTreeMap<String, Interval> = BTreeMap::new();
    for s in schedules.iter().filter(|s| !policy.excludes(&s.imei)) {
        let asked = Duration::from_secs(s.every_s.max(1));
        let entry = out.entry(s.imei.clone()).or_insert(Interval {
            asked,
            effective: asked,
        });
        entry.asked = entry.asked.min(asked);
        entry.effective = entry.asked.max(policy.min_rotation_interval);
    }
    out
}

/// A modem's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The shortest `rotate_every_s` among its ports.
    pub asked: Duration,
    /// What is kept: `asked`, or the seller's `min_rotation_interval_s` if that is longer.
    pub effective: Duration,
}

type Finished = (String, Result<Rotated, CommandError>);

struct Scheduler {
    ctx: Arc<CommandContext>,
    /// Where reports go, for the session.
    reports: mpsc::Sender<RotationReport>,
    /// When each scheduled modem's schedule was first seen: its clock starts there.
    since: HashMap<String, Instant>,
    /// The earliest next attempt after a failure.
    retry_at: HashMap<String, Instant>,
    /// Modems being rotated, by task.
    running: JoinSet<Finished>,
    busy: HashMap<Id, String>,
    /// The intervals of the last round.
    plan: BTreeMap<String, Interval>,
    /// Modems whose clamping was already logged.
    told_clamped: HashSet<String>,
    /// Whether "the policy forbids rotation" was already logged.
    told_disabled: bool,
}

impl Scheduler {
    fn new(ctx: Arc<CommandContext>, reports: mpsc::Sender<RotationReport>) -> Self {
        Scheduler {
            ctx,
            reports,
            since: HashMap::new(),
            retry_at: HashMap::new(),
            running: JoinSet::new(),
            busy: HashMap::new(),
            plan: BTreeMap::new(),
            told_clamped: HashSet::new(),
            told_disabled: false,
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let ctx = self.ctx.clone();
        loop {
            let next = self.tick(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ctx.schedules_changed() => {}
                _ = sleep => {}
                Some(done) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.finished(done).await;
                }
            }
        }
        self.running.shutdown().await;
    }

    /// Starts every rotation that is due; returns when the next one will be.
    fn tick(&mut self, now: Instant) -> Option<Instant> {
        let schedules = match self.ctx.journal().rotation_schedules() {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read rotation schedules from the journal");
                return Some(now + JOURNAL_RETRY);
            }
        };
        let plan = intervals(&schedules, self.ctx.policy());
        self.since.retain(|imei, _| plan.contains_key(imei));
        self.retry_at.retain(|imei, _| plan.contains_key(imei));
        self.plan = plan.clone();
        if !self.ctx.policy().allow.rotate_ip {
            if !plan.is_empty() && !self.told_disabled {
                self.told_disabled = true;
                tracing::warn!("allocations ask for automatic IP rotation, but this box's policy does not allow rotate_ip: not rotating");
            }
            return None;
        }
        let running: HashSet<String> = self.busy.values().cloned().collect();
        let mut next: Option<Instant> = None;
        let mut due = Vec::new();
        for (imei, interval) in &plan {
            self.tell_clamped(imei, *interval);
            let since = *self.since.entry(imei.clone()).or_insert(now);
            if running.contains(imei) {
                continue;
            }
            let anchor = self
                .ctx
                .last_rotation_start(imei)
                .map_or(since, |last| last.max(since));
            let mut at = anchor + interval.effective;
            if let Some(retry) = self.retry_at.get(imei) {
                at = at.max(*retry);
            }
            if at <= now {
                due.push(imei.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for imei in due {
            self.start(imei);
        }
        next
    }

    fn tell_clamped(&mut self, imei: &str, interval: Interval) {
        if interval.effective > interval.asked && self.told_clamped.insert(imei.to_string()) {
            tracing::info!(
                imei,
                asked_s = interval.asked.as_secs(),
                policy_s = interval.effective.as_secs(),
                "automatic rotation asked more often than this box's min_rotation_interval_s allows; rotating at the policy's interval"
            );
        }
    }

    fn start(&mut self, imei: String) {
        tracing::info!(imei = %imei, "automatic rotation due");
        let ctx = self.ctx.clone();
        let task_imei = imei.clone();
        let handle = self.running.spawn(async move {
            let result = rotate_ip::rotate(&ctx, &task_imei).await;
            (task_imei, result)
        });
        self.busy.insert(handle.id(), imei);
    }

    async fn finished(&mut self, done: Result<(Id, Finished), JoinError>) {
        let (id, (imei, result)) = match done {
            Ok(done) => done,
            Err(e) => {
                // The task panicked or was aborted: free its modem and try again later.
                if let Some(imei) = self.busy.remove(&e.id()) {
                    tracing::error!(imei = %imei, error = %e, "automatic rotation task failed");
                    self.retry_later(&imei);
                }
                return;
            }
        };
        self.busy.remove(&id);
        let at_ms = self.ctx.now_ms();
        self.audit(&imei, &result).await;
        match result {
            Ok(r) => self.report(RotationReport {
                imei: r.imei,
                old_ip: r.old_ip,
                new_ip: r.new_ip,
                changed: r.changed,
                at_ms,
                automatic: true,
            }),
            Err(e) => {
                tracing::warn!(imei = %imei, code = e.code.as_str(), message = %e.message, "automatic rotation failed");
                self.retry_later(&imei);
            }
        }
    }

    fn report(&self, report: RotationReport) {
        if self.reports.try_send(report).is_err() {
            tracing::warn!(
                "{REPORT_BACKLOG} rotation reports wait for the control plane; dropping a new one"
            );
        }
    }

    fn retry_later(&mut self, imei: &str) {
        let interval = self
            .plan
            .get(imei)
            .map_or(RETRY_AFTER_FAILURE, |i| i.effective);
        let retry = Instant::now() + RETRY_AFTER_FAILURE.min(interval);
        self.retry_at.insert(imei.to_string(), retry);
    }

    /// One line in the seller's local audit, as for a `rotate_ip` command.
    async fn audit(&self, imei: &str, result: &Result<Rotated, CommandError>) {
        let command = Command {
            id: AUDIT_ID.into(),
            deadline_ms: 0,
            body: CommandBody::RotateIp(RotateIp { imei: imei.into() }),
        };
        let outcome = match result {
            Ok(r) => Outcome::Ok {
                output: CommandOutput::RotateIp(r.clone()),
            },
            Err(e) => Outcome::Error { error: e.clone() },
        };
        self.ctx.audit(&command, &outcome).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(allocation: &str, imei: &str, every_s: u64) -> RotationSchedule {
        RotationSchedule {
            allocation_id: allocation.into(),
            imei: imei.into(),
            every_s,
        }
    }

    #[test]
    fn the_shortest_interval_per_modem_wins_clamped_to_the_policy() {
        let schedules = [
            schedule("a", "356000000000001", 600),
            schedule("b", "356000000000001", 120),
            schedule("c", "356000000000002", 30),
            schedule("d", "356000000000003", 60),
        ];
        let policy = Policy {
            min_rotation_interval: Duration::from_secs(90),
            excluded_imeis: ["356000000000003".to_string()].into(),
            ..Policy::default()
        };
        let plan = intervals(&schedules, &policy);
        assert_eq!(plan.len(), 2, "excluded modems are never scheduled");
        let secs = |d: Duration| d.as_secs();
        let one = plan["356000000000001"];
        assert_eq!((secs(one.asked), secs(one.effective)), (120, 120));
        let two = plan["356000000000002"];
        assert_eq!((secs(two.asked), secs(two.effective)), (30, 90));
        let free = intervals(&schedules, &Policy::default());
        assert_eq!(secs(free["356000000000002"].effective), 30);
    }
}
