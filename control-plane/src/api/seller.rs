//! `GET /v1/seller/boxes`: a seller's own boxes — the agents enrolled with enrollment
//! tokens of its label — each with its live state, health and capabilities (what the box
//! was seen to keep: the self-test's verdicts), its modems, its quality over the last day,
//! and what is sold on it: allocation ids, states and times, never an order id, a tenant
//! or a buyer credential. `GET /v1/seller/usage`: its modems' traffic per day (UTC), what
//! its payout is computed from, as JSON or CSV. Seller keys see their own label; admins
//! name one (`?seller=`). The console's seller page shows the same (`console::snapshot`).

use super::agents::{view, AgentView};
use super::auth::{Caller, SellerScope};
use super::json::ApiQuery;
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::rfc3339;
use crate::quality::{Figures, Window};
use crate::store::{AllocationRecord, StoreError};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use time::{Date, Duration};

/// `GET /v1/seller/boxes` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BoxesQuery {
    /// The seller label (admins: required; seller keys: their own, or absent).
    seller: Option<String>,
}

/// A seller's boxes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SellerBoxes {
    /// The seller label.
    seller: String,
    /// Its enrolled agents, by id.
    boxes: Vec<SellerBox>,
}

/// One box of the seller.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SellerBox {
    #[serde(flatten)]
    agent: AgentView,
    /// Its quality over the last 24 hours (`GET /v1/agents/{id}/quality`).
    quality_24h: Figures,
    /// What is sold on its modems now.
    sold: Vec<SoldPort>,
}

/// A live allocation on one of the box's modems, without buyer data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SoldPort {
    allocation_id: String,
    imei: String,
    /// `pending`, `active` or `releasing`.
    state: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// The seller label `caller` asks for: a seller key's own (another is 403), or the one an
/// admin names (none is 422).
fn label_of(caller: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    match (&caller.seller, asked) {
        (Some(own), None) => Ok(own.clone()),
        (Some(own), Some(asked)) if asked.trim() == own => Ok(own.clone()),
        (Some(_), Some(_)) => Err(ApiError::forbidden()),
        (None, Some(asked)) if crate::store::valid_label(&asked) => Ok(asked.trim().to_string()),
        (None, _) => Err(ApiError::invalid(
            "name the seller: ?seller=LABEL (the label of its enrollment tokens)",
        )),
    }
}

/// `GET /v1/seller/boxes`.
#[utoipa::path(get, operation_id = "list_seller_boxes", path = "/v1/seller/boxes", tag = "sellers", security(("seller" = []), ("admin" = [])),
    params(BoxesQuery),
    responses((status = 200, description = "The seller's boxes and what is sold on them.", body = SellerBoxes)))]
pub async fn boxes(
    SellerScope(caller): SellerScope,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<BoxesQuery>,
) -> Result<Json<SellerBoxes>, ApiError> {
    let seller = label_of(&caller, q.seller)?;
    Ok(Json(SellerBoxes {
        boxes: boxes_of(&state, &seller).await?,
        seller,
    }))
}

/// The boxes of `seller` (agents whose label it is), by agent id.
pub(super) async fn boxes_of(state: &AppState, seller: &str) -> Result<Vec<SellerBox>, StoreError> {
    let now = state.fleet.clock().now();
    let quality = state.allocator.quality();
    let mut boxes = Vec::new();
    for record in state.store.agents().await? {
        if record.label != seller {
            continue;
        }
        let agent_id = record.agent_id.clone();
        let sold = state
            .store
            .agent_allocations(&agent_id, |r| r.state.is_live())
            .await?
            .iter()
            .map(sold_port)
            .collect();
        boxes.push(SellerBox {
            quality_24h: quality.figures(&agent_id, Window::Day, now).await?,
            agent: view(state, record),
            sold,
        });
    }
    Ok(boxes)
}

fn sold_port(r: &AllocationRecord) -> SoldPort {
    SoldPort {
        allocation_id: r.allocation_id.clone(),
        imei: r.imei.clone(),
        state: r.state.as_str().to_string(),
        created_at: rfc3339(r.created_at),
        expires_at: rfc3339(r.expires_at),
    }
}

/// The columns of the usage CSV, in order.
pub(super) const USAGE_COLUMNS: [&str; 5] = ["day", "agent_id", "imei", "bytes_in", "bytes_out"];

/// The longest span `GET /v1/seller/usage` answers for, days.
const MAX_DAYS: i64 = 366;

/// `GET /v1/seller/usage` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The seller label (admins: required; seller keys: their own, or absent).
    seller: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC; default: 30 days before `to`).
    #[param(value_type = Option<String>, format = Date)]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC; default: today).
    #[param(value_type = Option<String>, format = Date)]
    to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(inline)]
    format: Option<UsageFormat>,
}

/// How `GET /v1/seller/usage` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageFormat {
    /// A JSON document.
    #[default]
    Json,
    /// CSV: `day,agent_id,imei,bytes_in,bytes_out`.
    Csv,
}

/// A seller's modems' traffic per day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SellerUsage {
    seller: String,
    #[schema(format = Date)]
    from: String,
    #[schema(format = Date)]
    to: String,
    /// By box, modem and day; days without traffic are absent.
    days: Vec<UsageDay>,
}

/// One modem's traffic on one day (UTC), all its allocations together.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageDay {
    #[schema(format = Date)]
    day: String,
    agent_id: String,
    imei: String,
    /// Bytes towards the buyers.
    bytes_in: u64,
    /// Bytes from the buyers.
    bytes_out: u64,
}

fn parse_day(text: &str) -> Result<Date, ApiError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, format)
        .map_err(|_| ApiError::invalid(format!("{text:?} is not a day: expected YYYY-MM-DD")))
}

fn day_number(date: Date) -> i64 {
    (date - Date::from_calendar_date(1970, time::Month::January, 1).unwrap_or(Date::MIN))
        .whole_days()
}

fn day_text(day: i64) -> String {
    let epoch = Date::from_calendar_date(1970, time::Month::January, 1).unwrap_or(Date::MIN);
    epoch
        .checked_add(Duration::days(day))
        .map_or_else(|| day.to_string(), |d| d.to_string())
}

/// `GET /v1/seller/usage`.
#[utoipa::path(get, operation_id = "get_seller_usage", path = "/v1/seller/usage", tag = "sellers", security(("seller" = []), ("admin" = [])),
    params(UsageQuery),
    responses((status = 200, description = "Its modems' traffic per day (JSON, or CSV with `format=csv`).",
        content((SellerUsage = "application/json"), (String = "text/csv")))))]
pub async fn usage(
    SellerScope(caller): SellerScope,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let seller = label_of(&caller, q.seller)?;
    let today = state.fleet.clock().now().date();
    let to = q.to.as_deref().map(parse_day).transpose()?.unwrap_or(today);
    let from = match q.from.as_deref() {
        Some(text) => parse_day(text)?,
        None => to.checked_sub(Duration::days(30)).unwrap_or(to),
    };
    let span = (to - from).whole_days();
    if !(0..MAX_DAYS).contains(&span) {
        return Err(ApiError::invalid(format!(
            "from must not be after to, and at most {MAX_DAYS} days before it"
        )));
    }
    let days = usage_of(&state, &seller, day_number(from), day_number(to)).await?;
    let answer = SellerUsage {
        seller,
        from: from.to_string(),
        to: to.to_string(),
        days,
    };
    if q.format.unwrap_or_default() == UsageFormat::Json {
        return Ok(Json(answer).into_response());
    }
    let rows: Vec<serde_json::Value> = answer
        .days
        .iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect();
    let disposition = format!(
        "attachment; filename=\"usage-{}-{}.csv\"",
        answer.from, answer.to
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        super::csv::to_csv_in(&USAGE_COLUMNS, &rows),
    )
        .into_response())
}

/// Today's day number (UTC, since the epoch) on the plane's clock.
pub(super) fn today(state: &AppState) -> i64 {
    state
        .fleet
        .clock()
        .now()
        .unix_timestamp()
        .div_euclid(86_400)
}

/// `seller`'s modems' days `from ..= to` (day numbers), by box, modem and day.
pub(super) async fn usage_of(
    state: &AppState,
    seller: &str,
    from: i64,
    to: i64,
) -> Result<Vec<UsageDay>, StoreError> {
    let agents: Vec<String> = state
        .store
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.label == seller)
        .map(|a| a.agent_id)
        .collect();
    let mut days = state.store.modem_days(&agents, from, to).await?;
    days.sort_by(|a, b| (&a.agent_id, &a.imei, a.day).cmp(&(&b.agent_id, &b.imei, b.day)));
    Ok(days
        .into_iter()
        .map(|d| UsageDay {
            day: day_text(d.day),
            agent_id: d.agent_id,
            imei: d.imei,
            bytes_in: d.bytes_in,
            bytes_out: d.bytes_out,
        })
        .collect())
}
