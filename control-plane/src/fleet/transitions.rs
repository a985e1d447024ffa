//! Which modem changes are news, worked out where the change is applied (in the fleet's
//! write lock, from the entries it replaces), so nothing has to copy an agent's whole view
//! to compare it later: a known modem whose `online` flag flipped, or a known online modem
//! that left the inventory (offline, `removed`). Modems seen for the first time produce
//! nothing — an agent's first inventory after connecting, or after a plane restart, is not
//! a transition, and an agent's disconnect does not turn its modems offline (that is
//! `agent.disconnected`): no storm when 10,000 agents reconnect.

use farmhand_protocol::{Modem, Site};
use std::collections::BTreeMap;

/// One modem went online or offline.
#[derive(Debug, Clone, PartialEq)]
pub struct ModemTransition {
    /// The modem as it is now (for `removed`: as last seen, marked offline).
    pub modem: Modem,
    /// Its agent's site.
    pub site: Option<Site>,
    /// `status_changed`, or `removed` (no longer in its agent's inventory).
    pub reason: &'static str,
}

/// The transitions from `old` (the entries a change replaced or removed) to `now` (the
/// agent's modems after it).
pub(super) fn between(
    old: &BTreeMap<String, Modem>,
    now: &BTreeMap<String, Modem>,
    site: Option<&Site>,
) -> Vec<ModemTransition> {
    let mut out = Vec::new();
    for (imei, before) in old {
        let (modem, reason) = match now.get(imei) {
            Some(after) if after.online != before.online => (after.clone(), "status_changed"),
            None if before.online => {
                let gone = Modem {
                    online: false,
                    ..before.clone()
                };
                (gone, "removed")
            }
            _ => continue,
        };
        out.push(ModemTransition {
            modem,
            site: site.cloned(),
            reason,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modem(imei: &str, online: bool) -> Modem {
        Modem {
            imei: imei.into(),
            nick: "n".into(),
            online,
            ..Modem::default()
        }
    }

    fn map(modems: &[Modem]) -> BTreeMap<String, Modem> {
        modems.iter().map(|m| (m.imei.clone(), m.clone())).collect()
    }

    #[test]
    fn only_known_modems_that_flip_or_leave_online_make_transitions() {
        let first = map(&[modem("1", true), modem("2", false), modem("3", true)]);
        assert!(
            between(&map(&[]), &first, None).is_empty(),
            "first sight is not a transition"
        );
        assert!(between(&first, &first, None).is_empty());
        let later = map(&[modem("1", false), modem("2", true), modem("4", true)]);
        let seen: Vec<(String, bool, &str)> = between(&first, &later, None)
            .into_iter()
            .map(|t| (t.modem.imei, t.modem.online, t.reason))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("1".into(), false, "status_changed"),
                ("2".into(), true, "status_changed"),
                ("3".into(), false, "removed"),
            ]
        );
        assert!(
            between(&map(&[modem("9", false)]), &map(&[]), None).is_empty(),
            "an offline modem that leaves is not news"
        );
    }
}
