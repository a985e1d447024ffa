//! What one console page shows, as the JSON its live stream sends: the fleet (agents for
//! admins; modems for every role), allocations (counts by state, the live ones and those
//! that ended while the page was open), and for admins the plane's health (store, webhook
//! endpoints with their backlog, failures and last error, commands answered and their mean
//! round trip, requests refused by rate limits). Scoped like the
//! REST API: a marketplace session sees its tenant's allocations only, no agent records,
//! and no buyer credential or ProxySmart secret ever appears.

use super::session::Session;
use crate::api::AppState;
use crate::fleet::ModemFilter;
use crate::ids::rfc3339;
use crate::store::{AllocationRecord, DeliveryState, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet, VecDeque};

/// Ended allocations a page keeps showing.
const ENDED_KEPT: usize = 50;

/// One page's view, sent whole at each change.
#[derive(Debug, Serialize, PartialEq)]
pub struct Snapshot {
    role: &'static str,
    agents: Option<Vec<Value>>,
    modems: Vec<Value>,
    allocation_counts: BTreeMap<&'static str, u64>,
    allocations: Vec<Value>,
    health: Option<Value>,
    /// The allocation a detail page shows: the allocation and its timeline.
    detail: Option<Value>,
    /// Per-minute samples of the fleet, oldest first (admins).
    trend: Option<Vec<super::trend::Sample>>,
    /// The modem a detail page shows (every agent's copy of the IMEI).
    modem: Option<Value>,
}

/// What a detail page shows besides the page's own tables.
#[derive(Debug, Clone, Copy)]
pub enum Focus<'a> {
    /// A list page.
    None,
    /// One allocation.
    Allocation(&'a str),
    /// One modem, by IMEI.
    Modem(&'a str),
}

/// What a page's stream remembers between snapshots: the allocations it saw live, and
/// those that ended since (newest first), so a release shows as `released`.
#[derive(Debug, Default)]
pub struct Memory {
    live: HashSet<String>,
    ended: VecDeque<Value>,
}

/// The snapshot for `session` now, with what a detail page (`focus`) shows.
pub async fn take(
    state: &AppState,
    session: &Session,
    memory: &mut Memory,
    focus: Focus<'_>,
) -> Result<Snapshot, StoreError> {
    let admin = session.is_admin();
    let tenant = session.caller.tenant.clone();
    let mine = |r: &AllocationRecord| tenant.as_ref().is_none_or(|t| *t == r.tenant);
    let live: Vec<AllocationRecord> = state
        .store
        .live_allocations()
        .await?
        .into_iter()
        .filter(|r| mine(r))
        .collect();
    let ids: HashSet<String> = live.iter().map(|r| r.allocation_id.clone()).collect();
    for gone in memory.live.iter().filter(|id| !ids.contains(*id)) {
        if let Some(record) = state.store.allocation(gone).await? {
            if memory.ended.len() == ENDED_KEPT {
                memory.ended.pop_back();
            }
            memory.ended.push_front(allocation(&record));
        }
    }
    memory.live = ids;
    let mut allocation_counts = BTreeMap::new();
    if admin {
        for (s, n) in state.store.allocation_counts().await? {
            allocation_counts.insert(s.as_str(), n);
        }
    } else {
        for r in &live {
            *allocation_counts.entry(r.state.as_str()).or_default() += 1;
        }
    }
    let mut allocations: Vec<Value> = live.iter().map(allocation).collect();
    allocations.extend(memory.ended.iter().cloned());
    let holding: u64 = allocation_counts
        .iter()
        .filter(|(name, _)| ["pending", "active", "replaced", "releasing"].contains(name))
        .map(|(_, n)| *n)
        .sum();
    let views = state.fleet.modems(&ModemFilter::default());
    let (known, online) = (views.len(), views.iter().filter(|m| m.online).count());
    let modems = views
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "imei": m.imei, "agent_id": m.agent_id, "carrier": m.carrier,
                "country": m.country, "ext_ip": m.ext_ip, "online": m.online,
                "signal": m.signal, "active_allocations": m.active_allocations,
                "capacity": m.capacity, "available": m.available,
            })
        })
        .collect();
    Ok(Snapshot {
        role: session.caller.role.as_str(),
        agents: if admin {
            Some(agents(state).await?)
        } else {
            None
        },
        modems,
        allocation_counts,
        allocations,
        health: if admin {
            Some(health(state).await?)
        } else {
            None
        },
        detail: match focus {
            Focus::Allocation(id) => owned(state, session, id)
                .await?
                .map(|r| timeline(state, &r)),
            _ => None,
        },
        modem: match focus {
            Focus::Modem(imei) => Some(modem(state, imei, &live).await?),
            _ => None,
        },
        trend: admin.then(|| {
            let mut samples = state.trends.samples();
            samples.push(super::trend::Sample::now(
                state.fleet.clock().now(),
                holding,
                online,
                known,
            ));
            samples
        }),
    })
}

/// Every agent's copy of `imei`: what the box reports, its load, its last rotation (old →
/// new IP), its identity changes, and the allocations on it the session may see.
async fn modem(
    state: &AppState,
    imei: &str,
    live: &[AllocationRecord],
) -> Result<Value, StoreError> {
    let filter = ModemFilter {
        imei: Some(imei.to_string()),
        ..ModemFilter::default()
    };
    let mut copies = Vec::new();
    for m in state.fleet.modems(&filter) {
        let last = state.store.last_rotation(&m.agent_id, &m.imei).await?;
        let on_it: Vec<Value> = live
            .iter()
            .filter(|r| r.imei == m.imei && r.agent_id == m.agent_id)
            .map(allocation)
            .collect();
        copies.push(serde_json::json!({
            "modem": m,
            "last_rotation": last.map(|r| serde_json::json!({
                "at": time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.at_ms) * 1_000_000).ok().map(rfc3339),
                "old_ip": r.old_ip, "new_ip": r.new_ip, "changed": r.changed, "automatic": r.automatic,
            })),
            "allocations": on_it,
        }));
    }
    Ok(serde_json::json!({"imei": imei, "copies": copies}))
}

/// Allocation `id` if `session` may see it (its tenant's, or any for admins).
pub async fn owned(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<Option<AllocationRecord>, StoreError> {
    let tenant = session.caller.tenant.as_ref();
    Ok(state
        .store
        .allocation(id)
        .await?
        .filter(|r| tenant.is_none_or(|t| *t == r.tenant)))
}

/// The wire name of a serde enum value (`modem_offline`).
fn name_of(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One allocation and what happened to it, in order: requested, each move (when, why,
/// from where to where), the end (released, failed: when and why) or the expiry ahead,
/// and what this node's probes say now.
fn timeline(state: &AppState, r: &AllocationRecord) -> Value {
    let first_modem = r.replacements.first().map_or(&r.imei, |m| &m.from_imei);
    let mut events = vec![serde_json::json!({
        "at": rfc3339(r.created_at), "what": "requested",
        "detail": format!("order {} on modem {first_modem}", r.order_id),
    })];
    for m in &r.replacements {
        events.push(serde_json::json!({
            "at": rfc3339(m.at), "what": "moved",
            "detail": format!("{} → {} ({})", m.from_imei, m.to_imei, name_of(m.reason)),
        }));
    }
    match r.ended_at() {
        Some(at) => {
            let why = r.release_reason.map(name_of).unwrap_or_default();
            let failure = r.failure.clone().unwrap_or_default();
            let detail: Vec<&str> = [why.as_str(), failure.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            events.push(serde_json::json!({
                "at": rfc3339(at), "what": r.state.as_str(), "detail": detail.join(": "),
            }));
        }
        None => events.push(serde_json::json!({
            "at": rfc3339(r.expires_at), "what": "expires", "detail": "unless renewed",
        })),
    }
    let probes = state.probes.track(&r.allocation_id).map(|t| {
        let s = t.summary();
        serde_json::json!({
            "health": if t.degraded.is_some() { "degraded" } else { "ok" },
            "reason": t.degraded.map(crate::probe::Failure::as_str),
            "probes": s.probes, "ok": s.ok,
        })
    });
    serde_json::json!({"allocation": allocation(r), "timeline": events, "probes": probes})
}

/// An allocation as the console shows it: no login, no password.
fn allocation(r: &AllocationRecord) -> Value {
    serde_json::json!({
        "allocation_id": r.allocation_id, "order_id": r.order_id, "state": r.state.as_str(),
        "imei": r.imei, "agent_id": r.agent_id, "carrier": r.carrier, "country": r.country,
        "host": r.host, "http_port": r.http_port, "socks_port": r.socks_port,
        "created_at": rfc3339(r.created_at), "expires_at": rfc3339(r.expires_at),
        "released_at": r.released_at.map(rfc3339), "release_reason": r.release_reason,
        "replacements": r.replacements.len(),
    })
}

async fn agents(state: &AppState) -> Result<Vec<Value>, StoreError> {
    Ok(state
        .store
        .agents()
        .await?
        .into_iter()
        .filter(|a| !a.revoked)
        .map(|a| {
            let live = state.fleet.agent(&a.agent_id);
            let modems = live.as_ref().map(|l| l.modems.values().collect::<Vec<_>>());
            let total = modems.as_ref().map_or(0, Vec::len);
            let online = modems.iter().flatten().filter(|m| m.online).count();
            serde_json::json!({
                "agent_id": a.agent_id, "label": a.label, "hostname": a.hostname,
                "version": live.as_ref().and_then(|l| l.agent_version.clone()),
                "connected": live.as_ref().is_some_and(|l| l.connected),
                "last_seen": live.as_ref().and_then(|l| l.last_seen).map(rfc3339),
                "node": live.as_ref().and_then(|l| l.node.clone()),
                "modems_online": online, "modems_total": total,
            })
        })
        .collect())
}

/// Deliveries of each endpoint looked at for its backlog and last error.
const RECENT_DELIVERIES: usize = 50;

async fn health(state: &AppState) -> Result<Value, StoreError> {
    let mut webhooks = Vec::new();
    for endpoint in state.webhooks.endpoints().await? {
        let recent = state
            .webhooks
            .deliveries(&endpoint.webhook_id, RECENT_DELIVERIES)
            .await?;
        let count = |s: DeliveryState| recent.iter().filter(|d| d.state == s).count();
        let last_error = recent.iter().find_map(|d| d.last_error.clone());
        webhooks.push(serde_json::json!({
            "webhook_id": endpoint.webhook_id, "url": endpoint.url,
            "pending": count(DeliveryState::Pending), "failed": count(DeliveryState::Failed),
            "last_error": last_error,
        }));
    }
    let commands: Vec<Value> = state
        .metrics
        .command_latencies()
        .into_iter()
        .map(|(op, n, mean)| serde_json::json!({"op": op, "answered": n, "mean_ms": mean.as_millis() as u64}))
        .collect();
    Ok(serde_json::json!({
        "store": state.store.backend(),
        "agents_connected": state.fleet.connected_count(),
        "webhook_deliveries_pending": state.store.pending_webhook_deliveries().await?,
        "webhooks": webhooks,
        "commands": commands,
        "rate_limited": state.metrics.refusals(),
        "probes_judging_paused": state.metrics.probe_judging_paused(),
    }))
}
