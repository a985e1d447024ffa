//! Who each IMEI is beyond its number: the SIM in it (`ICCID`), where it is plugged in
//! (`USB_ID`) and which agent reports it. A change is news — a SIM swap changes the
//! buyer's carrier identity under the same IMEI, a re-plug or a move to another box is
//! hardware work the marketplace may want to know of — so each is kept in a bounded
//! history per IMEI and handed up as an [`IdentityChange`] (`modem.identity_changed`; a
//! SIM swap on a sold modem is probed at once). In memory: the first report after a
//! restart is the new baseline. ICCIDs are shown by their last four digits only.

use farmhand_protocol::Modem;
use std::collections::{HashMap, VecDeque};
use time::OffsetDateTime;

/// Changes kept per IMEI.
const HISTORY: usize = 10;

/// What changed about a modem's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityChangeKind {
    /// Another SIM (ICCID) under the same IMEI.
    SimSwapped,
    /// The modem was plugged in elsewhere on its box (`USB_ID`).
    Replugged,
    /// Another agent reports the IMEI, and the one before no longer does.
    Moved,
}

impl IdentityChangeKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SimSwapped => "sim_swapped",
            Self::Replugged => "replugged",
            Self::Moved => "moved",
        }
    }
}

/// One change of a modem's identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct IdentityChange {
    /// The IMEI.
    pub imei: String,
    /// The agent reporting it now.
    pub agent_id: String,
    /// What changed.
    pub kind: IdentityChangeKind,
    /// Before: the ICCID's last four digits, the USB path, or the agent id.
    pub from: Option<String>,
    /// After, likewise.
    pub to: Option<String>,
    /// When the plane saw it.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone)]
struct Identity {
    agent_id: String,
    iccid: Option<String>,
    usb_id: Option<String>,
}

/// The last identity of every IMEI seen, and its changes.
#[derive(Debug, Default)]
pub(super) struct Identities {
    last: HashMap<String, Identity>,
    history: HashMap<String, VecDeque<IdentityChange>>,
}

impl Identities {
    /// Notes `modem` as `agent_id` reports it at `at`; `agent_still_reports(previous)` says
    /// whether the agent that reported it before still does (then it is a duplicate, not a
    /// move). Returns the changes, oldest first.
    pub(super) fn observe(
        &mut self,
        agent_id: &str,
        modem: &Modem,
        at: OffsetDateTime,
        agent_still_reports: impl Fn(&str) -> bool,
    ) -> Vec<IdentityChange> {
        let seen = Identity {
            agent_id: agent_id.to_string(),
            iccid: modem.iccid.clone().filter(|s| !s.is_empty()),
            usb_id: modem.usb_id.clone().filter(|s| !s.is_empty()),
        };
        let Some(before) = self.last.get(&modem.imei).cloned() else {
            self.last.insert(modem.imei.clone(), seen);
            return Vec::new();
        };
        let mut changes = Vec::new();
        let change = |kind, from: Option<String>, to: Option<String>| IdentityChange {
            imei: modem.imei.clone(),
            agent_id: agent_id.to_string(),
            kind,
            from,
            to,
            at,
        };
        if before.agent_id != agent_id {
            if agent_still_reports(&before.agent_id) {
                // Two agents report it: `modem.duplicate_identity`, not a move. Neither
                // becomes the baseline until one stops.
                return Vec::new();
            }
            changes.push(change(
                IdentityChangeKind::Moved,
                Some(before.agent_id.clone()),
                Some(agent_id.to_string()),
            ));
        }
        if let (Some(old), Some(new)) = (&before.iccid, &seen.iccid) {
            if old != new {
                changes.push(change(
                    IdentityChangeKind::SimSwapped,
                    Some(last_four(old)),
                    Some(last_four(new)),
                ));
            }
        }
        // A moved modem is in another box: its USB path there says nothing.
        if before.agent_id == agent_id {
            if let (Some(old), Some(new)) = (&before.usb_id, &seen.usb_id) {
                if old != new {
                    changes.push(change(
                        IdentityChangeKind::Replugged,
                        Some(old.clone()),
                        Some(new.clone()),
                    ));
                }
            }
        }
        let merged = Identity {
            agent_id: seen.agent_id,
            iccid: seen.iccid.or(before.iccid),
            usb_id: seen.usb_id.or(before.usb_id),
        };
        self.last.insert(modem.imei.clone(), merged);
        let history = self.history.entry(modem.imei.clone()).or_default();
        for c in &changes {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(c.clone());
        }
        changes
    }

    /// The changes of `imei` kept, oldest first.
    pub(super) fn history(&self, imei: &str) -> Vec<IdentityChange> {
        self.history
            .get(imei)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// `…1234`: enough to tell two SIMs apart, not enough to name one.
fn last_four(iccid: &str) -> String {
    let tail: String = iccid
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modem(iccid: &str, usb: &str) -> Modem {
        Modem {
            imei: "350000000000018".into(),
            iccid: Some(iccid.into()),
            usb_id: Some(usb.into()),
            ..Modem::default()
        }
    }

    #[test]
    fn swaps_replugs_and_moves_are_told_once_each() {
        let mut ids = Identities::default();
        let at = OffsetDateTime::UNIX_EPOCH;
        let gone = |_: &str| false;
        assert!(ids
            .observe("a1", &modem("8949020000000001111", "1-1.1"), at, gone)
            .is_empty());
        assert!(ids
            .observe("a1", &modem("8949020000000001111", "1-1.1"), at, gone)
            .is_empty());
        let swap = ids.observe("a1", &modem("8949020000000002222", "1-1.1"), at, gone);
        assert_eq!(swap.len(), 1);
        assert_eq!(swap[0].kind, IdentityChangeKind::SimSwapped);
        assert_eq!(
            (swap[0].from.as_deref(), swap[0].to.as_deref()),
            (Some("…1111"), Some("…2222")),
            "ICCIDs by their last four digits only"
        );
        let replug = ids.observe("a1", &modem("8949020000000002222", "1-1.4"), at, gone);
        assert_eq!(replug[0].kind, IdentityChangeKind::Replugged);
        // Still reported by a1: a duplicate, not a move.
        assert!(ids
            .observe("a2", &modem("8949020000000002222", "2-1"), at, |_| true)
            .is_empty());
        let moved = ids.observe("a2", &modem("8949020000000002222", "2-1"), at, gone);
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].kind, IdentityChangeKind::Moved);
        assert_eq!(moved[0].to.as_deref(), Some("a2"));
        assert_eq!(ids.history("350000000000018").len(), 3);
        // A box that stops showing the ICCID has not swapped its SIM.
        let mut blank = modem("", "2-1");
        blank.iccid = None;
        assert!(ids.observe("a2", &blank, at, gone).is_empty());
    }
}
