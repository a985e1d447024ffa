//! Who is connected and which commands await a result.
//!
//! `sessions` maps an agent id to the handle of its one live session (a second one is
//! refused). `pending` maps a command id to the agent it was sent to and, while someone
//! waits for it, the oneshot of that dispatcher. A pending command is **not** tied to a
//! session: when the agent reconnects the command is redelivered with the same id and its
//! result still reaches the dispatcher. When a dispatcher gives up (deadline), the id moves
//! to `expired`, so a result that arrives later is recognised as *late* — and handed to the
//! late-result handler — as is a result for a redelivered command nobody waits for (after
//! a plane restart); results for ids never issued to that agent are ignored.
//!
//! A revoked agent (`revoke`) can never answer: its pending commands are dropped at once,
//! which wakes their dispatchers (their oneshot closes; `is_revoked` tells them why), and a
//! command tracked for it afterwards — a dispatch that found the session just before the
//! kick — is closed as it is tracked, so no dispatcher waits on it until its deadline.
//!
//! One `std` mutex guards the maps; it is never held across an `.await`.

use farmhand_protocol::{Command, CommandResult, Outcome};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long an expired command id is remembered for late results.
const EXPIRED_RETENTION: Duration = Duration::from_secs(30 * 60);
/// Pruning walks every pending and expired id, so it runs at most this often (not on
/// every command: with thousands pending, e.g. each session's `reconcile` in a reconnect
/// storm, that was quadratic).
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The handle other tasks hold on a live session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Identifies the session (in logs and for stale-unregister protection).
    pub session_id: String,
    /// Commands for the session task to send. Boxed: a channel allocates its slots in
    /// blocks of 32 up front, and 32 unboxed commands would cost every idle session ~6 KiB.
    pub commands: mpsc::Sender<Box<Command>>,
    /// Cancelled to close the session (revocation).
    pub kick: CancellationToken,
    /// Cancelled to close the session because a newer one of the agent took over on
    /// another node (`leases`).
    pub superseded: CancellationToken,
    /// The session's fencing epoch in the shared store (`leases`; 0 on sled).
    pub epoch: u64,
    /// Cancelled once the session has ended (unregistered).
    pub closed: CancellationToken,
}

#[derive(Debug)]
struct Pending {
    agent_id: String,
    /// Its op, and when it was tracked here (`in_flight`).
    op: &'static str,
    sent: Instant,
    deadline: Instant,
    /// `None` when nobody waits here (the result is late by definition, or goes to
    /// `origin`).
    tx: Option<oneshot::Sender<Outcome>>,
    /// The other node waiting for the result (a command queued there for an agent whose
    /// session is here).
    origin: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, SessionHandle>,
    pending: HashMap<String, Pending>,
    expired: HashMap<String, (String, Instant)>,
    /// Agents revoked while this process runs (a revoked agent never gets a session again).
    revoked: HashSet<String>,
    /// Commands of another node answered here whose result is on its way to the database
    /// (`Completion::Elsewhere` until `handed_over`): their outbox row is still there, and
    /// they must not be sent again meanwhile.
    handing_over: HashSet<String>,
    /// When `prune` last ran.
    pruned_at: Option<Instant>,
}

impl Inner {
    /// Prunes unless that was done less than [`PRUNE_EVERY`] ago.
    fn maybe_prune(&mut self, now: Instant) {
        if self
            .pruned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            self.prune(now);
            self.pruned_at = Some(now);
        }
    }

    /// Drops forgotten state: expired ids past their retention, and commands nobody waits
    /// for whose deadline passed (their dispatcher returned early, or the plane restarted).
    fn prune(&mut self, now: Instant) {
        self.expired
            .retain(|_, (_, at)| now.duration_since(*at) < EXPIRED_RETENTION);
        let stale: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now && p.tx.as_ref().is_none_or(|tx| tx.is_closed()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(p) = self.pending.remove(&id) {
                self.expired.insert(id, (p.agent_id, now));
            }
        }
    }
}

/// What became of a `command_result`.
#[derive(Debug)]
pub enum Completion {
    /// Handed to the waiting dispatcher.
    Delivered,
    /// Nobody waits any more; the late-result handler must see it.
    Late(CommandResult),
    /// Another node waits for it: hand it over (`origin`).
    Elsewhere {
        /// The node.
        origin: String,
        /// The result.
        result: CommandResult,
    },
    /// Not a command issued to this agent; ignored.
    Unknown,
}

/// What is in flight now (`Registry::in_flight`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Commands awaited, per op.
    pub by_op: std::collections::BTreeMap<&'static str, u64>,
    /// How long the oldest has waited (`None`: nothing in flight).
    pub oldest: Option<Duration>,
}

/// A second live session for the same agent was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

/// Live sessions and pending commands.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the live session of `agent_id`, unless it already has one.
    pub fn register(&self, agent_id: &str, handle: SessionHandle) -> Result<(), Duplicate> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(agent_id) {
            return Err(Duplicate);
        }
        inner.sessions.insert(agent_id.to_string(), handle);
        Ok(())
    }

    /// Removes session `session_id` of `agent_id` and signals its `closed` token. Its
    /// pending commands stay pending: they are redelivered when the agent reconnects.
    pub fn unregister(&self, agent_id: &str, session_id: &str) {
        let mut inner = self.lock();
        if inner
            .sessions
            .get(agent_id)
            .is_some_and(|h| h.session_id == session_id)
        {
            if let Some(handle) = inner.sessions.remove(agent_id) {
                handle.closed.cancel();
            }
        }
    }

    /// The live session of `agent_id`.
    pub fn session(&self, agent_id: &str) -> Option<SessionHandle> {
        self.lock().sessions.get(agent_id).cloned()
    }

    /// Whether `agent_id` has a live session.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.lock().sessions.contains_key(agent_id)
    }

    /// Records that `command_id` (an `op`), sent to `agent_id`, awaits a result until
    /// `deadline`.
    pub fn track(
        &self,
        agent_id: &str,
        command_id: &str,
        op: &'static str,
        deadline: Instant,
    ) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        if inner.revoked.contains(agent_id) {
            return rx; // `tx` is dropped: the dispatcher learns at once (see `revoke`)
        }
        let pending = Pending {
            agent_id: agent_id.to_string(),
            op,
            sent: Instant::now(),
            deadline,
            tx: Some(tx),
            origin: None,
        };
        inner.maybe_prune(Instant::now());
        inner.pending.insert(command_id.to_string(), pending);
        rx
    }

    /// Makes sure a redelivered `command_id` is known: if no dispatcher tracks it (the
    /// plane restarted since it was sent), its result will be handled as late.
    pub fn adopt(
        &self,
        agent_id: &str,
        command_id: &str,
        op: &'static str,
        deadline: Instant,
        origin: Option<String>,
    ) {
        let mut inner = self.lock();
        if inner.revoked.contains(agent_id) {
            return;
        }
        inner.maybe_prune(Instant::now());
        inner
            .pending
            .entry(command_id.to_string())
            .or_insert_with(|| Pending {
                agent_id: agent_id.to_string(),
                op,
                sent: Instant::now(),
                deadline,
                tx: None,
                origin,
            });
    }

    /// The commands a dispatcher of this node still waits for: how many per op, and how
    /// long the oldest has waited (a dispatcher that gave up no longer counts).
    pub fn in_flight(&self) -> InFlight {
        let inner = self.lock();
        let mut now = InFlight::default();
        for p in inner.pending.values() {
            if p.tx.as_ref().is_some_and(|tx| !tx.is_closed()) {
                *now.by_op.entry(p.op).or_insert(0) += 1;
                let waited = p.sent.elapsed();
                now.oldest = Some(now.oldest.map_or(waited, |o: Duration| o.max(waited)));
            }
        }
        now
    }

    /// Whether `command_id` was adopted or is awaited here.
    pub fn is_tracked(&self, command_id: &str) -> bool {
        let inner = self.lock();
        inner.pending.contains_key(command_id) || inner.handing_over.contains(command_id)
    }

    /// The result of `command_id` (`Completion::Elsewhere`) reached the database, or could
    /// not: it may be sent again from now on.
    pub fn handed_over(&self, command_id: &str) {
        self.lock().handing_over.remove(command_id);
    }

    /// Hands `outcome` to the dispatcher waiting here for `command_id` (its agent's session
    /// is on another node); false when nobody waits any more (the result is late).
    pub fn complete_remote(&self, command_id: &str, outcome: Outcome) -> bool {
        let mut inner = self.lock();
        let waiting = inner
            .pending
            .get(command_id)
            .is_some_and(|p| p.tx.is_some());
        if !waiting {
            return false;
        }
        inner
            .pending
            .remove(command_id)
            .and_then(|p| p.tx)
            .is_some_and(|tx| tx.send(outcome).is_ok())
    }

    /// Forgets `command_id` entirely (it will not be redelivered and nobody waits for it).
    pub fn forget(&self, command_id: &str) {
        self.lock().pending.remove(command_id);
    }

    /// The dispatcher of `command_id` stops waiting. Returns false when the result was
    /// already being delivered (the dispatcher should then read its oneshot).
    pub fn expire(&self, command_id: &str) -> bool {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.maybe_prune(now);
        match inner.pending.remove(command_id) {
            Some(p) => {
                inner
                    .expired
                    .insert(command_id.to_string(), (p.agent_id, now));
                true
            }
            None => false,
        }
    }

    /// Routes a `command_result` received from `agent_id`.
    pub fn complete(&self, agent_id: &str, result: CommandResult) -> Completion {
        let mut inner = self.lock();
        if inner
            .pending
            .get(&result.id)
            .is_some_and(|p| p.agent_id == agent_id)
        {
            if let Some(p) = inner.pending.remove(&result.id) {
                if let Some(origin) = p.origin {
                    inner.handing_over.insert(result.id.clone());
                    return Completion::Elsewhere { origin, result };
                }
                let sent = match p.tx {
                    Some(tx) => tx.send(result.outcome),
                    None => Err(result.outcome),
                };
                return match sent {
                    Ok(()) => Completion::Delivered,
                    Err(outcome) => Completion::Late(CommandResult {
                        id: result.id,
                        outcome,
                    }),
                };
            }
        }
        if inner
            .expired
            .get(&result.id)
            .is_some_and(|(a, _)| a == agent_id)
        {
            inner.expired.remove(&result.id);
            return Completion::Late(result);
        }
        Completion::Unknown
    }

    /// `agent_id` was revoked: forgets its pending and expired commands — dropping their
    /// oneshots wakes every dispatcher waiting on one — and closes any tracked for it from
    /// now on. Returns how many dispatchers were waiting.
    pub fn revoke(&self, agent_id: &str) -> usize {
        let mut inner = self.lock();
        inner.revoked.insert(agent_id.to_string());
        inner.expired.retain(|_, (agent, _)| agent != agent_id);
        let mut woken = 0;
        inner.pending.retain(|_, p| {
            let ours = p.agent_id == agent_id;
            woken += usize::from(ours && p.tx.as_ref().is_some_and(|tx| !tx.is_closed()));
            !ours
        });
        woken
    }

    /// Whether `agent_id` was revoked while this process runs.
    pub fn is_revoked(&self, agent_id: &str) -> bool {
        self.lock().revoked.contains(agent_id)
    }

    /// Records the fencing epoch the store gave `agent_id`'s session `session_id`.
    pub fn set_epoch(&self, agent_id: &str, session_id: &str, epoch: u64) {
        if let Some(handle) = self.lock().sessions.get_mut(agent_id) {
            if handle.session_id == session_id {
                handle.epoch = epoch;
            }
        }
    }

    /// Every live session: agent id and handle.
    pub fn sessions(&self) -> Vec<(String, SessionHandle)> {
        self.lock()
            .sessions
            .iter()
            .map(|(agent_id, handle)| (agent_id.clone(), handle.clone()))
            .collect()
    }

    /// Closes the live session of `agent_id`; false when it had none.
    pub fn kick(&self, agent_id: &str) -> bool {
        match self.lock().sessions.get(agent_id) {
            Some(handle) => {
                handle.kick.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use farmhand_protocol::{CommandOutput, Updated};

    fn handle(session: &str) -> SessionHandle {
        let (commands, _rx) = mpsc::channel(1);
        SessionHandle {
            session_id: session.into(),
            commands,
            kick: CancellationToken::new(),
            superseded: CancellationToken::new(),
            epoch: 0,
            closed: CancellationToken::new(),
        }
    }

    fn result(id: &str) -> CommandResult {
        let output = CommandOutput::UpdatePort(Updated {
            allocation_id: "al".into(),
        });
        CommandResult {
            id: id.into(),
            outcome: Outcome::Ok { output },
        }
    }

    #[test]
    fn one_session_per_agent_and_stale_unregister_is_ignored() {
        let reg = Registry::default();
        let first = handle("s1");
        reg.register("a", first.clone()).unwrap();
        assert_eq!(reg.register("a", handle("s2")), Err(Duplicate));
        reg.unregister("a", "s2");
        assert!(reg.is_connected("a"));
        assert!(!first.closed.is_cancelled());
        reg.unregister("a", "s1");
        assert!(!reg.is_connected("a"));
        assert!(
            first.closed.is_cancelled(),
            "the session's waiters learn it closed"
        );
    }

    #[test]
    fn in_flight_counts_the_commands_a_dispatcher_still_waits_for() {
        let reg = Registry::default();
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(reg.in_flight(), InFlight::default());
        let _first = reg.track("a", "c1", "provision", later);
        let _second = reg.track("b", "c2", "provision", later);
        let gave_up = reg.track("a", "c3", "release", later);
        reg.adopt("a", "c4", "release", later, None);
        drop(gave_up);
        let now = reg.in_flight();
        assert_eq!(now.by_op.get("provision"), Some(&2));
        assert_eq!(now.by_op.get("release"), None, "gave up, or nobody waits");
        assert!(now.oldest.is_some());
        assert!(matches!(
            reg.complete("a", result("c1")),
            Completion::Delivered
        ));
        assert_eq!(reg.in_flight().by_op.get("provision"), Some(&1));
    }

    #[test]
    fn results_are_delivered_late_or_ignored() {
        let reg = Registry::default();
        let later = Instant::now() + Duration::from_secs(60);
        let mut rx = reg.track("a", "c1", "rotate_ip", later);
        assert!(
            matches!(reg.complete("b", result("c1")), Completion::Unknown),
            "other agent"
        );
        assert!(matches!(
            reg.complete("a", result("c1")),
            Completion::Delivered
        ));
        assert!(rx.try_recv().is_ok());

        let _rx2 = reg.track("a", "c2", "rotate_ip", later);
        assert!(reg.expire("c2"));
        assert!(!reg.expire("c2"));
        assert!(matches!(
            reg.complete("a", result("c2")),
            Completion::Late(_)
        ));
        assert!(
            matches!(reg.complete("a", result("c2")), Completion::Unknown),
            "late only once"
        );
        assert!(matches!(
            reg.complete("a", result("never-issued")),
            Completion::Unknown
        ));
    }

    #[test]
    fn revoking_wakes_the_waiters_of_that_agent_only() {
        let reg = Registry::default();
        let later = Instant::now() + Duration::from_secs(60);
        let mut waiting = reg.track("a", "c1", "rotate_ip", later);
        let mut other = reg.track("b", "c2", "rotate_ip", later);
        reg.adopt("a", "c3", "rotate_ip", later, None);
        let _expired = reg.track("a", "c4", "rotate_ip", later);
        assert!(reg.expire("c4"));
        assert_eq!(reg.revoke("a"), 1);
        assert!(reg.is_revoked("a") && !reg.is_revoked("b"));
        assert!(
            matches!(
                waiting.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ),
            "the dispatcher is woken, not left until its deadline"
        );
        assert!(matches!(
            other.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        for id in ["c1", "c3", "c4"] {
            assert!(matches!(reg.complete("a", result(id)), Completion::Unknown));
        }
        // A dispatch that raced the revocation is closed as it is tracked.
        let mut raced = reg.track("a", "c5", "rotate_ip", later);
        assert!(matches!(
            raced.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        reg.adopt("a", "c6", "rotate_ip", later, None);
        assert!(matches!(
            reg.complete("a", result("c6")),
            Completion::Unknown
        ));
        assert!(matches!(
            reg.complete("b", result("c2")),
            Completion::Delivered
        ));
    }

    #[test]
    fn pending_commands_survive_the_session_and_adopted_ones_are_late() {
        let reg = Registry::default();
        let later = Instant::now() + Duration::from_secs(60);
        reg.register("a", handle("s1")).unwrap();
        let mut rx = reg.track("a", "c1", "rotate_ip", later);
        reg.unregister("a", "s1");
        reg.register("a", handle("s2")).unwrap();
        reg.adopt("a", "c1", "rotate_ip", later, None);
        assert!(matches!(
            reg.complete("a", result("c1")),
            Completion::Delivered
        ));
        assert!(
            rx.try_recv().is_ok(),
            "the dispatcher still gets its answer"
        );
        reg.adopt("a", "c9", "rotate_ip", later, None);
        assert!(matches!(
            reg.complete("a", result("c9")),
            Completion::Late(_)
        ));
        // A waiterless command past its deadline is pruned into `expired` (at most once
        // per PRUNE_EVERY: the next prune is due `PRUNE_EVERY` after the last one).
        reg.adopt("a", "c10", "rotate_ip", Instant::now(), None);
        let next_prune = reg.lock().pruned_at.unwrap() + PRUNE_EVERY;
        reg.lock().maybe_prune(next_prune);
        assert!(reg.lock().expired.contains_key("c10"));
        assert!(!reg.lock().pending.contains_key("c10"));
        drop(reg.track("a", "c11", "rotate_ip", later));
        assert!(matches!(
            reg.complete("a", result("c10")),
            Completion::Late(_)
        ));
    }
}
