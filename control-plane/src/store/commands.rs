//! The durable outbox of commands sent to agents and not yet answered (`pending_commands`):
//! key `<agent_id>/<command_id>`, so one agent's commands are one prefix scan at reconnect.
//!
//! Outbox writes are **not flushed on their own**: they reach the disk with the next flush
//! (the allocation state change that follows, or sled's periodic flush within 500 ms). What
//! a crash can lose is harmless: a lost `provision` belongs to an allocation that is failed
//! at restart anyway; a `releasing` allocation without a queued `release` gets a new one
//! when its agent reconnects; a lost removal only means a redelivery the agent answers from
//! its journal (or a purge at startup, past the deadline); a caller waiting on any other
//! command got no answer before the crash.
//!
//! A `provision` is stored **without its buyer password** (the field is emptied): the
//! allocator rebuilds it from the allocation's sealed password when it redelivers, so the
//! outbox never holds a credential in any form.
//!
//! A revoked agent's commands are all removed at its revocation (`purge_agent_commands`,
//! flushed by the caller) and, should the plane stop in between, when the allocator opens.

use super::{decode, encode, SledStore, StoreError};
use farmhand_protocol::{Command, CommandBody, Secret};
use serde::{Deserialize, Serialize};

/// A command awaiting its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCommand {
    /// The command id (reused by every redelivery).
    pub command_id: String,
    /// The agent it was sent to.
    pub agent_id: String,
    /// Unix ms after which it is no longer delivered or awaited.
    pub deadline_ms: u64,
    /// The body; a `provision`'s password is empty (see the module docs).
    pub body: CommandBody,
    /// The node waiting for its result, where nodes share the store (`None`: this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_node: Option<String>,
}

impl PendingCommand {
    /// The outbox form of `command` sent to `agent_id`, without any password.
    pub fn new(agent_id: &str, command: &Command) -> Self {
        let mut body = command.body.clone();
        if let CommandBody::Provision(p) = &mut body {
            p.password = Secret::new(String::new());
        }
        PendingCommand {
            command_id: command.id.clone(),
            agent_id: agent_id.to_string(),
            deadline_ms: command.deadline_ms,
            body,
            origin_node: None,
        }
    }

    /// The allocation the command is about, if any.
    pub fn allocation_id(&self) -> Option<&str> {
        match &self.body {
            CommandBody::Provision(p) => Some(&p.allocation_id),
            CommandBody::Release(r) => Some(&r.allocation_id),
            CommandBody::UpdatePort(u) => Some(&u.allocation_id),
            CommandBody::RotateIp(_) | CommandBody::Reconcile(_) => None,
        }
    }
}

fn key(agent_id: &str, command_id: &str) -> Vec<u8> {
    format!("{agent_id}/{command_id}").into_bytes()
}

impl SledStore {
    /// Records a command before it is sent (not flushed: see the module docs).
    pub fn put_pending_command(&self, command: &PendingCommand) -> Result<(), StoreError> {
        self.commands.insert(
            key(&command.agent_id, &command.command_id),
            encode(command)?,
        )?;
        Ok(())
    }

    /// Forgets a command (answered or past its deadline); `false` if it was not there.
    pub fn remove_pending_command(
        &self,
        agent_id: &str,
        command_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.commands.remove(key(agent_id, command_id))?.is_some())
    }

    /// The commands of `agent_id` awaiting a result, oldest id order.
    pub fn pending_commands(&self, agent_id: &str) -> Result<Vec<PendingCommand>, StoreError> {
        self.commands
            .scan_prefix(format!("{agent_id}/").as_bytes())
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// Removes every command of `agent_id` (a revoked agent: nothing queued for it can be
    /// delivered); not flushed on its own, the caller flushes. Returns how many went.
    pub fn purge_agent_commands(&self, agent_id: &str) -> Result<usize, StoreError> {
        let mut purged = 0;
        for k in self
            .commands
            .scan_prefix(format!("{agent_id}/").as_bytes())
            .keys()
        {
            if self.commands.remove(k?)?.is_some() {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Removes every command whose deadline is at or before `now_ms` (used at startup);
    /// returns how many went.
    pub fn purge_expired_commands(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut purged = 0;
        for item in self.commands.iter() {
            let (k, v) = item?;
            let command: PendingCommand = decode(&v)?;
            if command.deadline_ms <= now_ms {
                self.commands.remove(k)?;
                purged += 1;
            }
        }
        if purged > 0 {
            self.flush()?;
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use farmhand_protocol::{Provision, Release};

    fn provision(id: &str, deadline_ms: u64) -> Command {
        Command {
            id: id.into(),
            deadline_ms,
            body: CommandBody::Provision(Provision {
                allocation_id: "al_1".into(),
                imei: "350000000000018".into(),
                login: "fhlogin".into(),
                password: Secret::new("canary-password-never-stored"),
                expires_at_ms: 1,
                bandwidth_kbit: None,
                traffic_quota_mb: None,
                rotate_every_s: None,
            }),
        }
    }

    #[test]
    fn commands_survive_reopen_without_their_password() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .put_pending_command(&PendingCommand::new("ag_a", &provision("c_1", 100)))
                .unwrap();
            let release = Command {
                id: "c_2".into(),
                deadline_ms: 300,
                body: CommandBody::Release(Release {
                    allocation_id: "al_2".into(),
                }),
            };
            store
                .put_pending_command(&PendingCommand::new("ag_b", &release))
                .unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let a = store.pending_commands("ag_a").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].allocation_id(), Some("al_1"));
        let CommandBody::Provision(p) = &a[0].body else {
            panic!("provision expected")
        };
        assert_eq!(p.password.expose(), "");
        assert_eq!(store.pending_commands("ag_b").unwrap().len(), 1);
        assert_eq!(store.purge_expired_commands(200).unwrap(), 1);
        assert!(store.pending_commands("ag_a").unwrap().is_empty());
        assert!(store.remove_pending_command("ag_b", "c_2").unwrap());
        assert!(!store.remove_pending_command("ag_b", "c_2").unwrap());
        // A revoked agent's outbox goes whole, and only its own (not a longer id's).
        for (agent, id) in [("ag_c", "c_3"), ("ag_c", "c_4"), ("ag_cd", "c_5")] {
            store
                .put_pending_command(&PendingCommand::new(agent, &provision(id, u64::MAX)))
                .unwrap();
        }
        assert_eq!(store.purge_agent_commands("ag_c").unwrap(), 2);
        assert!(store.pending_commands("ag_c").unwrap().is_empty());
        assert_eq!(store.pending_commands("ag_cd").unwrap().len(), 1);
        assert_eq!(store.purge_agent_commands("ag_c").unwrap(), 0);
        drop(store);
        let files = crate::store::tests::all_bytes(dir.path());
        assert!(!files
            .windows(b"canary-password".len())
            .any(|w| w == b"canary-password"));
    }
}
