//! Who each IMEI is beyond its number: the SIM in it (`ICCID`), where it is plugged in
//! (`USB_ID`) and which agent reports it. A change is news — a SIM swap changes the
//! buyer's carrier identity under the same IMEI, a re-plug or a move to another box is
//! hardware work the marketplace may want to know of — so each is kept in a bounded
//! history per IMEI and handed up as an [`IdentityChange`] (`modem.identity_changed`; a
//! SIM swap on a sold modem is probed at once). The last identity is the modem as its agent
//! last reported it (the fleet keeps that anyway), so nothing is kept per modem but the
//! history of those that changed. In memory: the first report after a restart is the new
//! baseline. ICCIDs are shown by their last four digits only.

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

/// The changes seen of every IMEI that changed (no memory for one that never did: the last
/// identity is the modem as its agent last reported it, kept by the fleet anyway).
#[derive(Debug, Default)]
pub(super) struct Identities {
    history: HashMap<String, VecDeque<IdentityChange>>,
}

impl Identities {
    /// Compares `modem` as `agent_id` reports it at `at` with `before` (its previous report
    /// by this agent) — or, for an IMEI new to this agent, with `moved_from` (another agent
    /// that last listed it and no longer holds a session: the modem moved boxes). Returns
    /// the changes, oldest first, and keeps them.
    pub(super) fn observe(
        &mut self,
        agent_id: &str,
        modem: &Modem,
        before: Option<&Modem>,
        moved_from: Option<&str>,
        at: OffsetDateTime,
    ) -> Vec<IdentityChange> {
        let change = |kind, from: Option<String>, to: Option<String>| IdentityChange {
            imei: modem.imei.clone(),
            agent_id: agent_id.to_string(),
            kind,
            from,
            to,
            at,
        };
        let known = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let mut changes = Vec::new();
        match before {
            Some(before) => {
                if let (Some(old), Some(new)) = (known(&before.iccid), known(&modem.iccid)) {
                    if old != new {
                        let (from, to) = (last_four(&old), last_four(&new));
                        changes.push(change(IdentityChangeKind::SimSwapped, Some(from), Some(to)));
                    }
                }
                if let (Some(old), Some(new)) = (known(&before.usb_id), known(&modem.usb_id)) {
                    if old != new {
                        changes.push(change(IdentityChangeKind::Replugged, Some(old), Some(new)));
                    }
                }
            }
            None => {
                if let Some(from) = moved_from {
                    let moved = change(
                        IdentityChangeKind::Moved,
                        Some(from.to_string()),
                        Some(agent_id.to_string()),
                    );
                    changes.push(moved);
                }
            }
        }
        if !changes.is_empty() {
            let history = self.history.entry(modem.imei.clone()).or_default();
            for c in &changes {
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(c.clone());
            }
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
        let first = modem("8949020000000001111", "1-1.1");
        assert!(
            ids.observe("a1", &first, None, None, at).is_empty(),
            "a first report"
        );
        assert!(ids.observe("a1", &first, Some(&first), None, at).is_empty());
        let swapped = modem("8949020000000002222", "1-1.1");
        let swap = ids.observe("a1", &swapped, Some(&first), None, at);
        assert_eq!(swap.len(), 1);
        assert_eq!(swap[0].kind, IdentityChangeKind::SimSwapped);
        assert_eq!(
            (swap[0].from.as_deref(), swap[0].to.as_deref()),
            (Some("…1111"), Some("…2222")),
            "ICCIDs by their last four digits only"
        );
        let replugged = modem("8949020000000002222", "1-1.4");
        let replug = ids.observe("a1", &replugged, Some(&swapped), None, at);
        assert_eq!(replug[0].kind, IdentityChangeKind::Replugged);
        let moved = ids.observe("a2", &replugged, None, Some("a1"), at);
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].kind, IdentityChangeKind::Moved);
        assert_eq!(moved[0].to.as_deref(), Some("a2"));
        assert_eq!(ids.history("350000000000018").len(), 3);
        // A box that stops showing the ICCID has not swapped its SIM.
        let mut blank = replugged.clone();
        blank.iccid = None;
        assert!(ids
            .observe("a2", &blank, Some(&replugged), None, at)
            .is_empty());
        assert!(ids.history("350000000000019").is_empty());
    }
}
