//! What one console page shows, as the JSON its live stream sends — each page's stream
//! reads only what that page shows ([`View`]): the fleet (agents and the charts for admins;
//! modems for every role), allocations (counts by state, the live ones and those that
//! ended while the page was open), for admins the plane's health (store, webhook endpoints
//! with their backlog, failures and last error, commands answered and their mean round
//! trip, requests refused by rate limits), one allocation's timeline, one modem, a seller's
//! own boxes. Scoped like the REST API: a marketplace session sees its tenant's
//! allocations only, no agent records; a seller session its own boxes only; no buyer
//! credential or ProxySmart secret ever appears.

use super::session::Session;
use crate::allocator::LastRotation;
use crate::api::AppState;
use crate::fleet::{ModemFilter, ModemView};
use crate::ids::rfc3339;
use crate::store::{AllocationRecord, DeliveryState, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet, VecDeque};

/// Ended allocations a page keeps showing.
const ENDED_KEPT: usize = 50;
/// Live allocations shown with their usage and probe health (read together: two reads a
/// second): the soonest to expire.
const DETAILED: usize = 200;
/// How soon an expiry counts as "expiring soon".
const SOON: time::Duration = time::Duration::hours(1);

/// Which page a stream feeds: each reads only what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Agents (admins), modems, and the charts (admins).
    Fleet,
    /// Allocations by state, live and ended while the page is open.
    Allocations,
    /// The plane's own health (admins).
    Health,
    /// One allocation and its timeline.
    Allocation(String),
    /// One modem (every agent's copy of the IMEI).
    Modem(String),
    /// A seller's own boxes (`api::seller`).
    Boxes,
}

impl View {
    /// Whether a session of `role` may follow it.
    pub fn allowed(&self, role: crate::store::Role) -> bool {
        use crate::store::Role;
        match self {
            View::Boxes => role == Role::Seller,
            View::Health => role == Role::Admin,
            View::Fleet | View::Allocations | View::Allocation(_) | View::Modem(_) => {
                role != Role::Seller
            }
        }
    }
}

/// One page's view, sent whole at each change (only what its page shows is set).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Snapshot {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agents: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modems: Option<Vec<Value>>,
    /// Per-minute samples of the fleet, oldest first, the last one live (admins).
    #[serde(skip_serializing_if = "Option::is_none")]
    trend: Option<Vec<super::trend::Sample>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocation_counts: Option<BTreeMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocations: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<Value>,
    /// The allocation a detail page shows: the allocation and its timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Value>,
    /// The modem a detail page shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    modem: Option<Value>,
    /// A seller's boxes (`GET /v1/seller/boxes`'s `boxes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    boxes: Option<Value>,
    /// A seller's modems' traffic per day, the last 7 days (`GET /v1/seller/usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

/// What a page's stream remembers between snapshots: the allocations it saw live, and
/// those that ended since (newest first), so a release shows as `released`.
#[derive(Debug, Default)]
pub struct Memory {
    live: HashSet<String>,
    ended: VecDeque<Value>,
}

/// The snapshot of `view` for `session` now.
pub async fn take(
    state: &AppState,
    session: &Session,
    memory: &mut Memory,
    view: &View,
) -> Result<Snapshot, StoreError> {
    let admin = session.is_admin();
    let mut snapshot = Snapshot {
        role: session.caller.role.as_str(),
        ..Snapshot::default()
    };
    match view {
        View::Fleet => {
            let views = state.fleet.modems(&ModemFilter::default());
            if admin {
                snapshot.agents = Some(agents(state).await?);
                snapshot.trend = Some(trend(state, &views).await?);
            }
            snapshot.modems = Some(views.into_iter().map(modem_row).collect());
        }
        View::Allocations => {
            let live = live(state, session).await?;
            snapshot.allocation_counts = Some(counts(state, session, &live).await?);
            snapshot.allocations = Some(allocations(state, memory, &live).await?);
        }
        View::Health if admin => snapshot.health = Some(health(state).await?),
        View::Health => {}
        View::Allocation(id) => {
            if let Some(r) = owned(state, session, id).await? {
                let track = state.store.probe_track(&r.allocation_id).await?;
                snapshot.detail = Some(timeline(&r, track.map(crate::probe::Track::from_record)));
            }
        }
        View::Boxes => {
            if let Some(seller) = &session.caller.seller {
                let boxes = crate::api::seller::boxes_of(state, seller).await?;
                snapshot.boxes = Some(serde_json::to_value(boxes)?);
                let today = crate::api::seller::today(state);
                let usage = crate::api::seller::usage_of(state, seller, today - 6, today).await?;
                snapshot.usage = Some(serde_json::to_value(usage)?);
            }
        }
        View::Modem(imei) => {
            let live = live(state, session).await?;
            snapshot.modem = Some(modem(state, imei, &live).await?);
        }
    }
    Ok(snapshot)
}

/// The live allocations `session` may see.
async fn live(state: &AppState, session: &Session) -> Result<Vec<AllocationRecord>, StoreError> {
    let tenant = session.caller.tenant.as_ref();
    Ok(state
        .store
        .live_allocations()
        .await?
        .into_iter()
        .filter(|r| tenant.is_none_or(|t| *t == r.tenant))
        .collect())
}

/// Allocations by state: every one for admins, the live ones of its tenant for others.
async fn counts(
    state: &AppState,
    session: &Session,
    live: &[AllocationRecord],
) -> Result<BTreeMap<&'static str, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    if session.is_admin() {
        for (s, n) in state.store.allocation_counts().await? {
            counts.insert(s.as_str(), n);
        }
    } else {
        for r in live {
            *counts.entry(r.state.as_str()).or_default() += 1;
        }
    }
    let soon = state.fleet.clock().now() + SOON;
    let expiring = live.iter().filter(|r| r.expires_at <= soon).count();
    counts.insert("expiring within 1 h", expiring as u64);
    Ok(counts)
}

/// The live allocations, then those that ended while the page was open, newest first.
async fn allocations(
    state: &AppState,
    memory: &mut Memory,
    live: &[AllocationRecord],
) -> Result<Vec<Value>, StoreError> {
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
    // Soonest to expire first; the first [`DETAILED`] with their usage and probe health.
    let mut live: Vec<&AllocationRecord> = live.iter().collect();
    live.sort_by_key(|r| r.expires_at);
    let detailed: Vec<String> = live
        .iter()
        .take(DETAILED)
        .map(|r| r.allocation_id.clone())
        .collect();
    let (mut usages, mut tracks) = (
        state.store.usages(&detailed).await?,
        state.store.probe_tracks(&detailed).await?,
    );
    let mut rows = Vec::with_capacity(live.len() + memory.ended.len());
    for (i, r) in live.into_iter().enumerate() {
        let mut row = allocation(r);
        if i < DETAILED {
            let used = usages.remove(&r.allocation_id);
            row["used_bytes"] = used.map(|u| u.bytes_in.saturating_add(u.bytes_out)).into();
            row["quota_mb"] = r.request.traffic_quota_mb.into();
            let track = tracks.remove(&r.allocation_id);
            let track = track.map(crate::probe::Track::from_record);
            row["probe_health"] = track.as_ref().map(|t| t.health()).into();
        }
        rows.push(row);
    }
    rows.extend(memory.ended.iter().cloned());
    Ok(rows)
}

/// The minute samples and a live point for now.
async fn trend(
    state: &AppState,
    modems: &[ModemView],
) -> Result<Vec<super::trend::Sample>, StoreError> {
    let holding = state
        .store
        .allocation_counts()
        .await?
        .into_iter()
        .filter(|(s, _)| s.holds_port())
        .map(|(_, n)| n)
        .sum();
    let online = modems.iter().filter(|m| m.online).count();
    let mut samples = state.trends.samples();
    let now = state.fleet.clock().now();
    samples.push(super::trend::Sample::now(
        now,
        holding,
        online,
        modems.len(),
    ));
    Ok(samples)
}

fn modem_row(m: ModemView) -> Value {
    serde_json::json!({
        "imei": m.imei, "agent_id": m.agent_id, "carrier": m.carrier,
        "country": m.country, "ext_ip": m.ext_ip, "online": m.online,
        "signal": m.signal, "active_allocations": m.active_allocations,
        "capacity": m.capacity, "available": m.available,
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
        let history = state.fleet.modem_history(&m.agent_id, &m.imei);
        copies.push(serde_json::json!({
            "last_rotation": last.map(LastRotation::from),
            "history": history,
            "modem": m,
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
/// and what the probes say now.
fn timeline(r: &AllocationRecord, track: Option<crate::probe::Track>) -> Value {
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
    let probes = track.map(|t| {
        let s = t.summary();
        serde_json::json!({
            "health": t.health(), "reason": t.degraded.map(crate::probe::Failure::as_str),
            "probes": s.probes, "ok": s.ok,
        })
    });
    serde_json::json!({"allocation": allocation(r), "timeline": events, "probes": probes})
}

/// An allocation as the console shows it: the webhook events' object (no login, no
/// password) and how many times it moved.
fn allocation(r: &AllocationRecord) -> Value {
    let mut object = crate::events::allocation_object(r);
    object["replacements"] = r.replacements.len().into();
    object
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
                "protocol": live.as_ref().and_then(|l| l.protocol),
                "connected_since": live.as_ref().and_then(|l| l.connected_since).map(rfc3339),
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
    let in_flight = state.gateway.commands_in_flight();
    let mut commands: BTreeMap<String, Value> = state
        .metrics
        .command_latencies()
        .into_iter()
        .map(|(op, n, mean)| {
            let row = serde_json::json!({"op": op, "in_flight": 0, "answered": n, "mean_ms": mean.as_millis() as u64});
            (op, row)
        })
        .collect();
    for (op, n) in &in_flight.by_op {
        let row = commands
            .entry(op.to_string())
            .or_insert_with(|| serde_json::json!({"op": op, "answered": 0, "mean_ms": null}));
        row["in_flight"] = (*n).into();
    }
    let commands: Vec<Value> = commands.into_values().collect();
    Ok(serde_json::json!({
        "store": state.store.backend(),
        "schema_version": state.store.schema_version().await?,
        "node": state.store.is_shared().then(|| state.gateway.node_id().to_string()),
        "commands_in_flight": in_flight.by_op.values().sum::<u64>(),
        "oldest_in_flight_ms": in_flight.oldest.map(|d| d.as_millis() as u64),
        "agents_connected": state.fleet.connected_count(),
        "webhook_deliveries_pending": state.store.pending_webhook_deliveries().await?,
        "webhooks": webhooks,
        "commands": commands,
        "rate_limited": state.metrics.refusals(),
        "probes_judging_paused": state.metrics.probe_judging_paused(),
    }))
}
