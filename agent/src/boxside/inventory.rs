//! The inventory poller: one task that reads ProxySmart's modem status every poll interval
//! and publishes the normalised modems through a `watch` channel, plus the pure diff that
//! turns two snapshots into a `ModemsChanged` report.
//!
//! While ProxySmart fails, the last known modems are kept and `reachable` is false (the plane
//! must not read an outage as "all modems gone"), and polling backs off.
//!
//! Modems the seller excluded from the marketplace (`[policy] excluded_imeis`) are dropped
//! here, at the source, so neither the inventory nor a change report can ever name them.

use crate::base::backoff::{Backoff, BackoffPolicy};
use crate::boxside::proxysmart::{normalize_modems, ProxysmartClient};
use farmhand_protocol::{Modem, ModemsChanged};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Longest pause between two polls while ProxySmart is down.
const MAX_DOWN_INTERVAL: Duration = Duration::from_secs(60);

/// What the agent currently knows about the box's modems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// At least one poll has finished (successfully or not).
    pub polled: bool,
    /// The last poll succeeded.
    pub reachable: bool,
    /// Modems by IMEI order; the last known ones while ProxySmart is unreachable.
    pub modems: Vec<Modem>,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
}

/// A handle on the poller: read the latest snapshot, wait for changes, ask for a poll now.
/// The task stops when the shutdown token is cancelled or every handle is dropped.
#[derive(Debug, Clone)]
pub struct InventoryHandle {
    rx: watch::Receiver<Snapshot>,
    poke: Arc<Notify>,
}

impl InventoryHandle {
    /// A handle fed by hand instead of by a poller (tests, embedding).
    pub fn manual(initial: Snapshot) -> (watch::Sender<Snapshot>, InventoryHandle) {
        let (tx, rx) = watch::channel(initial);
        (
            tx,
            InventoryHandle {
                rx,
                poke: Arc::new(Notify::new()),
            },
        )
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.rx.clone()
    }

    /// The latest snapshot.
    pub fn current(&self) -> Snapshot {
        self.rx.borrow().clone()
    }

    /// Asks for a poll now (after a command changed the box).
    pub fn poll_now(&self) {
        self.poke.notify_one();
    }
}

/// Starts the poller task; modems in `excluded` are never published.
pub fn spawn(
    client: ProxysmartClient,
    interval: Duration,
    excluded: BTreeSet<String>,
    shutdown: CancellationToken,
) -> InventoryHandle {
    let (tx, rx) = watch::channel(Snapshot::default());
    let poke = Arc::new(Notify::new());
    let poller = Poller {
        client,
        excluded,
        tx,
    };
    tokio::spawn(poll_loop(poller, interval, poke.clone(), shutdown));
    InventoryHandle { rx, poke }
}

/// What one poll needs.
struct Poller {
    client: ProxysmartClient,
    excluded: BTreeSet<String>,
    tx: watch::Sender<Snapshot>,
}

async fn poll_loop(
    poller: Poller,
    interval: Duration,
    poke: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let policy = BackoffPolicy {
        initial: interval,
        max: MAX_DOWN_INTERVAL.max(interval),
        healthy_after: Duration::ZERO,
    };
    let mut backoff = Backoff::new(policy);
    loop {
        let delay = match poll_once(&poller).await {
            true => {
                backoff.reset();
                interval
            }
            false => backoff.next_delay().max(interval),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = poller.tx.closed() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = poke.notified() => {}
        }
    }
}

/// One poll; publishes the snapshot if it changed and returns whether ProxySmart answered.
async fn poll_once(poller: &Poller) -> bool {
    let result = poller.client.show_status().await;
    let ok = result.is_ok();
    poller.tx.send_if_modified(|snap| {
        let before = snap.clone();
        match &result {
            Ok(entries) => {
                let modems = normalize_modems(entries, &before.modems);
                snap.modems = visible(modems, &poller.excluded);
                snap.reachable = true;
                snap.last_error = None;
            }
            Err(e) => {
                if before.reachable || !before.polled {
                    tracing::warn!(error = %e, "cannot read ProxySmart status; keeping the last known modems");
                }
                snap.reachable = false;
                snap.last_error = Some(e.to_string());
            }
        }
        snap.polled = true;
        *snap != before
    });
    ok
}

/// The modems the marketplace may see: all but the excluded ones.
pub fn visible(mut modems: Vec<Modem>, excluded: &BTreeSet<String>) -> Vec<Modem> {
    modems.retain(|m| !excluded.contains(&m.imei));
    modems
}

/// The change report between two snapshots, or `None` when nothing the plane sees changed.
pub fn diff(
    before: &[Modem],
    after: &[Modem],
    reachable_before: bool,
    reachable_after: bool,
) -> Option<ModemsChanged> {
    let changed: Vec<Modem> = after
        .iter()
        .filter(|m| !before.contains(m))
        .cloned()
        .collect();
    let removed: Vec<String> = before
        .iter()
        .filter(|old| !after.iter().any(|m| m.imei == old.imei))
        .map(|old| old.imei.clone())
        .collect();
    if changed.is_empty() && removed.is_empty() && reachable_before == reachable_after {
        return None;
    }
    Some(ModemsChanged {
        proxysmart_reachable: reachable_after,
        changed,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modem(imei: &str, ip: Option<&str>) -> Modem {
        Modem {
            imei: imei.into(),
            nick: "n".into(),
            carrier: Some("Vodafone".into()),
            ext_ip: ip.map(Into::into),
            online: true,
            rotating: false,
            signal: Some(20),
            model: None,
            ..Modem::default()
        }
    }

    #[test]
    fn identical_sets_produce_no_report() {
        let a = vec![modem("1", Some("1.1.1.1")), modem("2", None)];
        assert_eq!(diff(&a, &a, true, true), None);
    }

    #[test]
    fn changed_added_and_removed_modems_are_reported() {
        let before = vec![
            modem("1", Some("1.1.1.1")),
            modem("2", None),
            modem("3", None),
        ];
        let after = vec![
            modem("1", Some("2.2.2.2")),
            modem("3", None),
            modem("4", None),
        ];
        let report = diff(&before, &after, true, true).unwrap();
        let changed: Vec<&str> = report.changed.iter().map(|m| m.imei.as_str()).collect();
        assert_eq!(changed, ["1", "4"]);
        assert_eq!(report.changed[0].ext_ip.as_deref(), Some("2.2.2.2"));
        assert_eq!(report.removed, ["2"]);
        assert!(report.proxysmart_reachable);
    }

    #[test]
    fn excluded_modems_are_never_visible() {
        let all = vec![modem("1", None), modem("2", None), modem("3", None)];
        let excluded: BTreeSet<String> = ["2".to_string(), "9".to_string()].into();
        let shown: Vec<String> = visible(all.clone(), &excluded)
            .into_iter()
            .map(|m| m.imei)
            .collect();
        assert_eq!(shown, ["1", "3"]);
        assert_eq!(visible(all.clone(), &BTreeSet::new()), all);
    }

    #[test]
    fn reachability_change_alone_is_reported() {
        let a = vec![modem("1", None)];
        let report = diff(&a, &a, true, false).unwrap();
        assert!(
            !report.proxysmart_reachable && report.changed.is_empty() && report.removed.is_empty()
        );
    }
}
