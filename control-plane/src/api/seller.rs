//! `GET /v1/seller/boxes`: a seller's own boxes — the agents enrolled with enrollment
//! tokens of its label — each with its live state, health and capabilities (what the box
//! was seen to keep: the self-test's verdicts), its modems, its quality over the last day,
//! and what is sold on it: allocation ids, states and times, never an order id, a tenant
//! or a buyer credential. Seller keys see their own label; admins name one (`?seller=`).
//! The console's seller page shows the same (`console::snapshot`).

use super::agents::{view, AgentView};
use super::auth::{Caller, SellerScope};
use super::json::ApiQuery;
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::rfc3339;
use crate::quality::{Figures, Window};
use crate::store::{AllocationRecord, StoreError};
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

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
