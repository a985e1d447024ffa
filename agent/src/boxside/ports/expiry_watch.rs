//! Whether the box ends a port at its expiry. The agent writes `PROXY_VALID_BEFORE` on
//! every port so a buyer's port stops even while the plane is away; a box that stores the
//! field but ignores it keeps serving. Every few minutes the agent reads the port list: one
//! of our ports whose expiry passed more than [`GRACE`] ago (the box rounds to the minute)
//! and that the box still shows `IS_EXPIRED: 0` means it does not enforce expiry; one it
//! shows expired means it does. The verdict goes into the box profile
//! (`enforces_expiry`), which the plane shows with the agent — where the plane's own
//! release at the allocation's expiry is what ends those ports.

use super::check::parse_stamp;
use super::{Ports, PORT_NAME_PREFIX};
use crate::boxside::proxysmart::{PortEntry, ProxysmartError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long after a port's expiry the box must show it expired.
pub const GRACE: Duration = Duration::from_secs(120);
/// How often the port list is read for this.
const EVERY: Duration = Duration::from_secs(300);

/// Reads the port list every few minutes until `shutdown` and records the verdict.
pub fn spawn(ports: Ports, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(e) = observe(&ports, crate::base::clock::now_ms()).await {
                tracing::debug!(error = %e, "cannot read the port list to check expiry");
            }
        }
    });
}

/// Looks at our ports as the box lists them at `now_ms` (Unix ms) and records whether the
/// box enforces expiry, if any port tells; returns the verdict.
pub async fn observe(ports: &Ports, now_ms: u64) -> Result<Option<bool>, ProxysmartError> {
    let listed = ports.client().list_ports().await?;
    let verdict = judge(&listed, ports.clock().offset_s(), now_ms);
    if let Some(enforces) = verdict {
        if ports.profile().snapshot().enforces_expiry != Some(enforces) {
            if !enforces {
                tracing::warn!("this box kept serving-state on a port past its expiry (IS_EXPIRED stayed 0): the box does not end ports at their expiry; the control plane's release does");
            }
            ports
                .profile()
                .update(|p| p.enforces_expiry = Some(enforces));
        }
    }
    Ok(verdict)
}

/// The verdict of one listing: a port flagged expired says yes; one past its expiry (by
/// more than the grace) and not flagged says no, and outweighs the first.
fn judge(listed: &[PortEntry], offset_s: i64, now_ms: u64) -> Option<bool> {
    let mut verdict = None;
    for port in listed
        .iter()
        .filter(|p| p.port_name.starts_with(PORT_NAME_PREFIX))
    {
        let Some(expired) = port.expired else {
            continue;
        };
        let Some((at, _)) = parse_stamp(&port.valid_before) else {
            continue;
        };
        let at_ms = (at.assume_utc().unix_timestamp() - offset_s).saturating_mul(1000);
        let due = u64::try_from(at_ms).unwrap_or(0) + GRACE.as_millis() as u64;
        match (expired, now_ms >= due) {
            (true, _) => verdict = verdict.or(Some(true)),
            (false, true) => return Some(false),
            (false, false) => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::masked::Masked;

    fn port(name: &str, valid_before: &str, expired: Option<bool>) -> PortEntry {
        PortEntry {
            imei: "350000000000018".into(),
            port_id: "p1".into(),
            port_name: name.into(),
            http_port: Some(8001),
            socks_port: Some(5001),
            login: "l".into(),
            password: Masked::new("p"),
            valid_before: valid_before.into(),
            created_at: String::new(),
            quota: String::new(),
            over_quota: false,
            expired,
            bandlimin: None,
            bandlimout: None,
            bw_quota: None,
        }
    }

    /// 2026-01-01T00:10:00Z in Unix ms.
    const NOW: u64 = 1_767_226_200_000;

    #[test]
    fn a_port_past_its_expiry_tells_whether_the_box_enforces_it() {
        let past = "2026-01-01T00:05"; // 5 min ago in UTC
        let recent = "2026-01-01T00:09"; // 1 min ago: within the grace
        assert_eq!(
            judge(&[port("farmhand-a", past, Some(true))], 0, NOW),
            Some(true)
        );
        assert_eq!(
            judge(&[port("farmhand-a", past, Some(false))], 0, NOW),
            Some(false)
        );
        assert_eq!(
            judge(&[port("farmhand-a", recent, Some(false))], 0, NOW),
            None,
            "not yet"
        );
        assert_eq!(
            judge(&[port("seller-own", past, Some(false))], 0, NOW),
            None,
            "not ours"
        );
        assert_eq!(
            judge(&[port("farmhand-a", past, None)], 0, NOW),
            None,
            "not listed"
        );
        assert_eq!(
            judge(&[port("farmhand-a", "", Some(false))], 0, NOW),
            None,
            "no expiry"
        );
        // A box on UTC+3 prints 03:05 for 00:05Z.
        let local = "2026-01-01T03:05";
        assert_eq!(
            judge(&[port("farmhand-a", local, Some(false))], 3 * 3600, NOW),
            Some(false)
        );
        assert_eq!(
            judge(&[port("farmhand-a", local, Some(false))], 0, NOW),
            None,
            "03:05Z is ahead"
        );
        let both = [
            port("farmhand-a", past, Some(true)),
            port("farmhand-b", past, Some(false)),
        ];
        assert_eq!(
            judge(&both, 0, NOW),
            Some(false),
            "one unflagged expired port decides"
        );
    }
}
