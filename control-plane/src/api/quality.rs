//! `GET /v1/agents/{id}/quality` and `GET /v1/quality`: what each seller's boxes measurably
//! deliver (`quality`), so a marketplace can list, price and de-list by it — one agent over
//! every window, or every agent (and every seller label) over one window, ranked. Every
//! node of a cluster answers alike (the figures are kept in the store).

use super::auth::AnyRole;
use super::json::{ApiPath, ApiQuery};
use super::AppState;
use crate::http_error::ApiError;
use crate::quality::{Figures, Window};
use crate::store::QualityHour;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One agent's quality over every window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentQuality {
    agent_id: String,
    /// The label of the token that enrolled it (the seller).
    label: String,
    /// Over the last hour.
    #[serde(rename = "1h")]
    hour: Figures,
    /// Over the last 24 hours.
    #[serde(rename = "24h")]
    day: Figures,
    /// Over the last 7 days.
    #[serde(rename = "7d")]
    week: Figures,
}

/// `GET /v1/agents/{agent_id}/quality`.
#[utoipa::path(get, operation_id = "get_agent_quality", path = "/v1/agents/{agent_id}/quality", tag = "modems", security(("admin" = []), ("marketplace" = [])),
    params(("agent_id" = String, Path, description = "`ag_…`")),
    responses(
        (status = 200, description = "What its boxes measurably delivered.", body = AgentQuality),
        (status = 404, description = "No such agent (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn agent(
    _: AnyRole,
    State(state): State<AppState>,
    ApiPath(id): ApiPath,
) -> Result<Json<AgentQuality>, ApiError> {
    let record = state
        .store
        .agent(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no agent {id:?}")))?;
    let now = state.fleet.clock().now();
    let [hour, day, week] = state.allocator.quality().windows(&id, now).await?;
    Ok(Json(AgentQuality {
        hour,
        day,
        week,
        agent_id: id,
        label: record.label,
    }))
}

/// How `GET /v1/quality` ranks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Highest score first (default).
    #[default]
    Score,
    /// Highest probe availability first.
    Availability,
    /// Lowest median first byte first.
    Latency,
    /// Highest rotation success first.
    Rotations,
    /// Fewest allocations moved away first.
    Replacements,
}

/// `GET /v1/quality` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RankQuery {
    /// `score` (default), `availability`, `latency`, `rotations` or `replacements`.
    sort: Option<Sort>,
    /// `1h`, `24h` (default) or `7d`.
    window: Option<Window>,
}

/// One ranked agent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RankedAgent {
    agent_id: String,
    label: String,
    #[serde(flatten)]
    figures: Figures,
}

/// One seller label: its agents' figures together.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RankedLabel {
    label: String,
    /// Its enrolled, unrevoked agents.
    agents: usize,
    #[serde(flatten)]
    figures: Figures,
}

/// The fleet ranked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ranking {
    window: Window,
    sort: Sort,
    /// Every enrolled, unrevoked agent, best first; those without figures last.
    agents: Vec<RankedAgent>,
    /// Every seller label, ranked likewise.
    labels: Vec<RankedLabel>,
}

/// `GET /v1/quality?sort=…&window=…`.
#[utoipa::path(get, operation_id = "rank_quality", path = "/v1/quality", tag = "modems", security(("admin" = []), ("marketplace" = [])),
    params(RankQuery),
    responses((status = 200, description = "Agents and seller labels, best first.", body = Ranking)))]
pub async fn rank(
    _: AnyRole,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RankQuery>,
) -> Result<Json<Ranking>, ApiError> {
    let (sort, window) = (q.sort.unwrap_or_default(), q.window.unwrap_or(Window::Day));
    let quality = state.allocator.quality();
    let now = state.fleet.clock().now();
    let agents: Vec<_> = state
        .store
        .agents()
        .await?
        .into_iter()
        .filter(|a| !a.revoked)
        .collect();
    let sums = quality.every_agent(window, now).await?;
    let sum_of = |id: &str| sums.get(id).cloned().unwrap_or_default();
    let mut by_label: BTreeMap<String, (usize, QualityHour)> = BTreeMap::new();
    for a in &agents {
        let (count, sum) = by_label.entry(a.label.clone()).or_default();
        *count += 1;
        sum.add(&sum_of(&a.agent_id));
    }
    let mut labels: Vec<RankedLabel> = by_label
        .into_iter()
        .map(|(label, (agents, sum))| RankedLabel {
            figures: Figures::of(&sum),
            agents,
            label,
        })
        .collect();
    let mut ranked: Vec<RankedAgent> = agents
        .into_iter()
        .map(|a| RankedAgent {
            figures: Figures::of(&sum_of(&a.agent_id)),
            agent_id: a.agent_id,
            label: a.label,
        })
        .collect();
    ranked.sort_by(|a, b| better(sort, &a.figures, &b.figures).then(a.agent_id.cmp(&b.agent_id)));
    labels.sort_by(|a, b| better(sort, &a.figures, &b.figures).then(a.label.cmp(&b.label)));
    Ok(Json(Ranking {
        window,
        sort,
        agents: ranked,
        labels,
    }))
}

/// `a` before `b` when it is better by `sort`; what has no figure goes last.
fn better(sort: Sort, a: &Figures, b: &Figures) -> Ordering {
    fn desc<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    match sort {
        Sort::Score => desc(a.score, b.score),
        Sort::Availability => desc(a.availability_pct, b.availability_pct),
        // Lower is better: compare negated.
        Sort::Latency => desc(a.p50_ms.map(|v| -(v as f64)), b.p50_ms.map(|v| -(v as f64))),
        Sort::Rotations => desc(a.rotation_success_pct, b.rotation_success_pct),
        // Fewest first, among agents with figures; those without go last.
        Sort::Replacements => {
            let measured = |f: &Figures| f.probes + f.rotations + f.replacements > 0;
            measured(b)
                .cmp(&measured(a))
                .then(a.replacements.cmp(&b.replacements))
        }
    }
}
