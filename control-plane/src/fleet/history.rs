//! Each modem's recent history, for the console's modem page: when it went offline and came
//! back, and its IP rotations (old → new IP, and how long the plane's own took), the newest
//! [`KEPT`] of each per (agent, IMEI). Kept in this node's memory, and only for modems that
//! had any (so memory follows what happens, not the fleet's size); seen by this node since
//! it started, like identity changes. Forgotten with the agent (revocation, erasure).

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use time::OffsetDateTime;

/// Entries kept of each kind per modem.
pub const KEPT: usize = 10;

/// A modem went offline or came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OnlineChange {
    /// When the plane saw it.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// Online from then on.
    pub online: bool,
}

/// One finished IP rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RotationReceipt {
    /// When it finished.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// The IP before, if known.
    pub old_ip: Option<String>,
    /// The IP after (`null`: none settled in time).
    pub new_ip: Option<String>,
    /// Whether the IP is known to have changed.
    pub changed: bool,
    /// The box's own schedule did it (not the REST API).
    pub automatic: bool,
    /// From the plane's request to the new IP, ms (the plane's own rotations only).
    pub took_ms: Option<u64>,
}

/// One modem's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModemHistory {
    /// Oldest first.
    pub online: VecDeque<OnlineChange>,
    /// Oldest first.
    pub rotations: VecDeque<RotationReceipt>,
}

fn push<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == KEPT {
        list.pop_front();
    }
    list.push_back(item);
}

/// Every modem's history that has any, by (agent, IMEI).
#[derive(Debug, Default)]
pub(super) struct Histories {
    modems: HashMap<(String, String), ModemHistory>,
}

impl Histories {
    pub(super) fn went(&mut self, agent_id: &str, imei: &str, online: bool, at: OffsetDateTime) {
        let key = (agent_id.to_string(), imei.to_string());
        push(
            &mut self.modems.entry(key).or_default().online,
            OnlineChange { at, online },
        );
    }

    pub(super) fn rotated(&mut self, agent_id: &str, imei: &str, receipt: RotationReceipt) {
        let key = (agent_id.to_string(), imei.to_string());
        push(&mut self.modems.entry(key).or_default().rotations, receipt);
    }

    pub(super) fn of(&self, agent_id: &str, imei: &str) -> ModemHistory {
        self.modems
            .get(&(agent_id.to_string(), imei.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn forget(&mut self, agent_id: &str) {
        self.modems.retain(|(agent, _), _| agent != agent_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_entries_are_kept_per_modem_and_an_agent_is_forgotten_whole() {
        let mut h = Histories::default();
        let at = OffsetDateTime::UNIX_EPOCH;
        for i in 0..(KEPT + 3) {
            h.went(
                "ag",
                "1",
                i % 2 == 0,
                at + time::Duration::seconds(i as i64),
            );
        }
        h.went("other", "1", false, at);
        let kept = h.of("ag", "1").online;
        assert_eq!(kept.len(), KEPT);
        assert_eq!(
            kept[0].at,
            at + time::Duration::seconds(3),
            "the oldest went"
        );
        assert_eq!(h.of("other", "1").online.len(), 1, "per agent");
        h.forget("ag");
        assert_eq!(h.of("ag", "1"), ModemHistory::default());
        assert_eq!(h.of("other", "1").online.len(), 1);
    }
}
