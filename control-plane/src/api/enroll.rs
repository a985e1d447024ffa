//! `POST /v1/agent/enroll`: a one-time token and the agent's Ed25519 public key in, a new
//! `agent_id` out. Unknown, used and expired tokens all get the same 401, which spends the
//! client address's failed-authentication budget; every attempt also spends the token's
//! own attempt budget (both 429 `rate_limited` when empty).

use super::auth::{check_budget, note_failure};
use super::json::ApiJson;
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::{now, random_id};
use crate::ratelimit::ClientAddr;
use crate::store::{fingerprint, secret_hash, AgentRecord, AuditAction, EnrollError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::PUBLIC_KEY_LEN;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token (`fht_…`).
    token: String,
    /// Base64 (standard alphabet, padded) of the agent's 32-byte Ed25519 public key.
    #[schema(
        pattern = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$",
        example = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="
    )]
    public_key: String,
    /// The box's hostname: 1–253 printable characters.
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        example = "box-1"
    )]
    hostname: String,
}

/// The enrolled agent's id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    /// `ag_…`: the agent's identity from now on.
    agent_id: String,
}

/// 201 `{"agent_id"}`; 401 `invalid_enrollment_token`; 422 for a bad key or hostname.
#[utoipa::path(post, operation_id = "enroll_agent", path = "/v1/agent/enroll", tag = "enrollment", request_body = EnrollRequest,
    responses(
        (status = 201, description = "Enrolled.", body = Enrolled),
        (status = 401, description = "The token is unknown, used or expired (`invalid_enrollment_token`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn enroll(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    check_budget(&state, client)?;
    state
        .limits
        .enroll
        .try_spend(&secret_hash(&body.token))
        .map_err(|limited| {
            ApiError::rate_limited("attempts with this enrollment token", limited)
        })?;
    let public_key = STANDARD
        .decode(body.public_key.trim())
        .ok()
        .filter(|k| k.len() == PUBLIC_KEY_LEN)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "public_key must be base64 of a {PUBLIC_KEY_LEN}-byte Ed25519 key"
            ))
        })?;
    let hostname = body.hostname.trim();
    if hostname.is_empty() || hostname.len() > 253 || hostname.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "hostname must be 1–253 printable characters",
        ));
    }
    let agent = AgentRecord {
        agent_id: random_id("ag"),
        public_key,
        label: String::new(),
        hostname: hostname.to_string(),
        enrolled_at: now(),
        revoked: false,
        approved: !state.config.enroll.require_approval,
    };
    match state.store.enroll(&body.token, agent, now()).await {
        Ok(agent) => {
            info!(agent_id = %agent.agent_id, label = %agent.label, hostname = %agent.hostname, "agent enrolled");
            audit_enrollment(&state, client, &body.token, &agent).await;
            Ok((
                StatusCode::CREATED,
                Json(Enrolled {
                    agent_id: agent.agent_id.clone(),
                }),
            ))
        }
        Err(EnrollError::InvalidToken) => {
            note_failure(&state, client, "enrollment_token").await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_enrollment_token",
                "the enrollment token is unknown, already used or expired",
            ))
        }
        Err(EnrollError::Store(e)) => Err(e.into()),
    }
}

/// "token used" and "agent enrolled": the token appears only as its fingerprint.
async fn audit_enrollment(state: &AppState, client: ClientAddr, token: &str, agent: &AgentRecord) {
    let token = format!("token:{}", fingerprint(token));
    let actor = format!("client:{client}");
    state
        .store
        .audit(
            actor.clone(),
            AuditAction::EnrollmentTokenUsed,
            token.clone(),
            json!({"label": agent.label, "agent_id": agent.agent_id}),
        )
        .await;
    state
        .store
        .audit(
            actor,
            AuditAction::AgentEnrolled,
            format!("agent:{}", agent.agent_id),
            json!({"label": agent.label, "hostname": agent.hostname, "token": token}),
        )
        .await;
}
