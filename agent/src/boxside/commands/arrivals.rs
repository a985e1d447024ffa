//! The order commands arrive in, for `reconcile`: the plane read its desired set before it
//! sent it, so a port provisioned by a command that arrived after it (an order placed right
//! after a reconnect) is not among them and is not an orphan — even when the provision ran
//! first and the reconcile waited for it. Only what a waiting reconcile needs is kept: no
//! provision is noted while no reconcile waits, and a reconcile's notes go when it finishes.

use farmhand_protocol::{Command, CommandBody};
use std::collections::{BTreeSet, HashMap};

/// Commands numbered as they arrive.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    next: u64,
    /// Allocation → the arrival number of the provision that made its port (only while a
    /// reconcile waits).
    provisions: HashMap<String, u64>,
    /// Reconcile command → its arrival number, until it finishes.
    reconciles: HashMap<String, u64>,
}

impl Arrivals {
    /// `command` arrived now.
    pub(super) fn arrived(&mut self, command: &Command) {
        let n = self.next;
        self.next += 1;
        match &command.body {
            CommandBody::Provision(p) if !self.reconciles.is_empty() => {
                self.provisions.insert(p.allocation_id.clone(), n);
            }
            CommandBody::Reconcile(_) => {
                self.reconciles.insert(command.id.clone(), n);
            }
            _ => {}
        }
    }

    /// The allocations provisioned by commands that arrived after reconcile `command_id`
    /// (none when it did not arrive through [`Arrivals::arrived`]); it is finished.
    pub(super) fn provisioned_after(&mut self, command_id: &str) -> BTreeSet<String> {
        let Some(mark) = self.reconciles.get(command_id).copied() else {
            return BTreeSet::new();
        };
        let after = self
            .provisions
            .iter()
            .filter(|(_, n)| **n > mark)
            .map(|(allocation, _)| allocation.clone())
            .collect();
        self.finished(command_id);
        after
    }

    /// Command `command_id` finished (ran, or was refused before running): a reconcile's
    /// mark goes, and with it the provisions no waiting reconcile needs.
    pub(super) fn finished(&mut self, command_id: &str) {
        if self.reconciles.remove(command_id).is_none() {
            return;
        }
        match self.reconciles.values().min().copied() {
            Some(oldest) => self.provisions.retain(|_, n| *n > oldest),
            None => self.provisions.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use farmhand_protocol::{Provision, Reconcile, Release, Secret};

    fn command(id: &str, body: CommandBody) -> Command {
        Command {
            id: id.into(),
            deadline_ms: 0,
            body,
        }
    }

    fn provision(allocation: &str) -> Command {
        command(
            &format!("p-{allocation}"),
            CommandBody::Provision(Provision {
                allocation_id: allocation.into(),
                imei: "1".into(),
                login: "l".into(),
                password: Secret::new("p".repeat(20)),
                expires_at_ms: 0,
                bandwidth_kbit: None,
                traffic_quota_mb: None,
                rotate_every_s: None,
            }),
        )
    }

    fn reconcile(id: &str) -> Command {
        command(id, CommandBody::Reconcile(Reconcile { ports: Vec::new() }))
    }

    #[test]
    fn a_reconcile_sees_only_what_arrived_after_it_and_nothing_is_kept_for_nobody() {
        let mut a = Arrivals::default();
        // No reconcile waits: a session's provisions leave nothing behind.
        for i in 0..100 {
            a.arrived(&provision(&format!("early-{i}")));
        }
        assert!(a.provisions.is_empty());
        a.arrived(&reconcile("r1"));
        a.arrived(&provision("after"));
        a.arrived(&command(
            "x",
            CommandBody::Release(Release {
                allocation_id: "after".into(),
            }),
        ));
        assert_eq!(
            a.provisioned_after("r1"),
            BTreeSet::from(["after".to_string()])
        );
        assert!(a.provisions.is_empty() && a.reconciles.is_empty());
        // A reconcile refused before it ran is finished all the same.
        a.arrived(&reconcile("r2"));
        a.arrived(&provision("later"));
        a.finished("r2");
        assert!(a.provisions.is_empty() && a.reconciles.is_empty());
        // Two waiting: the older one's finish keeps what the newer one needs.
        a.arrived(&reconcile("r3"));
        a.arrived(&provision("between"));
        a.arrived(&reconcile("r4"));
        a.arrived(&provision("last"));
        assert_eq!(a.provisioned_after("r3").len(), 2);
        assert_eq!(
            a.provisioned_after("r4"),
            BTreeSet::from(["last".to_string()])
        );
        assert!(a.provisions.is_empty());
    }
}
