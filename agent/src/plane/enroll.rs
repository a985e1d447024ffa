//! Enrollment: create the key pair, register its public key with a one-time token
//! (`POST {server}/v1/agent/enroll`), and store the assigned agent id.
//!
//! The private key is written before the request so the key the plane registers is never
//! lost; only the public key and the token cross the wire.

use crate::config::{ConfigError, ControlPlaneConfig};
use crate::plane::identity::{self, IdentityError, IdentityFile, IDENTITY_FILE};
use crate::plane::tls::{Trust, TrustError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Path of the enrollment endpoint, appended to the server's base URL.
pub const ENROLL_PATH: &str = "/v1/agent/enroll";
/// Total timeout of the enrollment request.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The state directory already holds an identity.
    #[error("already enrolled as {agent_id} ({path}); remove the state directory to enroll again")]
    AlreadyEnrolled {
        /// The existing agent id.
        agent_id: String,
        /// The identity file.
        path: String,
    },
    /// The plane refused the token.
    #[error("invalid_enrollment_token: the control plane refused the token (unknown, already used or expired): {message}")]
    InvalidToken {
        /// The plane's message.
        message: String,
    },
    /// The plane could not be reached.
    #[error("cannot reach the control plane at {url}: {detail}")]
    Unreachable {
        /// The enrollment URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The plane's certificate was refused (the reason names the CA or the pins).
    #[error("{reason}")]
    CertificateRefused {
        /// One sentence, as the daemon logs it.
        reason: String,
    },
    /// The control-plane settings are invalid (e.g. `http://` without `insecure_plaintext`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS trust settings are unusable (unreadable `ca_file`, no system roots).
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The plane answered something unexpected.
    #[error("unexpected answer from the control plane (HTTP {status}): {message}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The plane's error message or a description of the body.
        message: String,
    },
    /// The key or identity could not be written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

#[derive(Deserialize)]
struct Enrolled {
    agent_id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Enrolls this host with the plane at `plane.url` using `token`, verifying its certificate
/// like the daemon does (`ca_file`, `pin_sha256`, system roots); returns the new agent id.
pub async fn enroll(
    plane: &ControlPlaneConfig,
    token: &str,
    state_dir: &Path,
) -> Result<String, EnrollError> {
    refuse_if_enrolled(state_dir)?;
    plane.check()?;
    let trust = plane
        .uses_tls()
        .then(|| Trust::for_plane(plane))
        .transpose()?;
    let server = plane.url.as_str();
    let url = format!("{}{ENROLL_PATH}", server.trim_end_matches('/'));
    let client = http_client_trusting(ENROLL_TIMEOUT, trust.as_ref()).map_err(|detail| {
        EnrollError::Unreachable {
            url: url.clone(),
            detail,
        }
    })?;
    let public_key = identity::generate_key(state_dir)?;
    let body = serde_json::json!({
        "token": token,
        "public_key": STANDARD.encode(&public_key),
        "hostname": hostname(),
    });
    let response = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| unreachable(&url, trust.as_ref(), e))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let agent_id = parse_answer(status, &text)?;
    let file = IdentityFile {
        agent_id: agent_id.clone(),
        server: server.to_string(),
    };
    identity::write_identity(state_dir, &file)?;
    tracing::info!(%agent_id, %server, "enrolled");
    Ok(agent_id)
}

fn unreachable(url: &str, trust: Option<&Trust>, error: reqwest::Error) -> EnrollError {
    let host = error
        .url()
        .and_then(|u| u.host_str())
        .unwrap_or("the server")
        .to_owned();
    if let Some(reason) = trust.and_then(|t| t.describe(&host, &error)) {
        return EnrollError::CertificateRefused { reason };
    }
    EnrollError::Unreachable {
        url: url.to_string(),
        detail: farmhand_ops::error_chain(&error.without_url()),
    }
}

fn refuse_if_enrolled(state_dir: &Path) -> Result<(), EnrollError> {
    let path = state_dir.join(IDENTITY_FILE);
    match identity::Identity::load(state_dir) {
        Ok(existing) => Err(EnrollError::AlreadyEnrolled {
            agent_id: existing.agent_id,
            path: path.display().to_string(),
        }),
        Err(_) => Ok(()),
    }
}

fn parse_answer(status: u16, text: &str) -> Result<String, EnrollError> {
    if status == 201 || status == 200 {
        let enrolled: Enrolled =
            serde_json::from_str(text).map_err(|_| EnrollError::Unexpected {
                status,
                message: "body is not {\"agent_id\": ...}".into(),
            })?;
        if enrolled.agent_id.is_empty() || enrolled.agent_id.len() > 128 {
            return Err(EnrollError::Unexpected {
                status,
                message: "empty or oversized agent_id".into(),
            });
        }
        return Ok(enrolled.agent_id);
    }
    let detail = serde_json::from_str::<ErrorBody>(text)
        .ok()
        .map(|b| b.error);
    if status == 401
        || detail
            .as_ref()
            .is_some_and(|d| d.code == "invalid_enrollment_token")
    {
        let message = detail
            .map(|d| d.message)
            .unwrap_or_else(|| "HTTP 401".into());
        return Err(EnrollError::InvalidToken { message });
    }
    let message = match detail {
        Some(d) => format!("{}: {}", d.code, d.message),
        None => "no error body".into(),
    };
    Err(EnrollError::Unexpected { status, message })
}

/// This host's name, for the plane's agent list (kernel first, then /etc/hostname).
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// An HTTP client for the control plane (honours HTTPS_PROXY/NO_PROXY), verifying HTTPS
/// servers with `trust` (the agent's CA/pin settings).
fn http_client_trusting(
    timeout: Duration,
    trust: Option<&Trust>,
) -> Result<reqwest::Client, String> {
    crate::base::crypto::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout);
    if let Some(trust) = trust {
        builder = builder.tls_backend_preconfigured(trust.client_config().as_ref().clone());
    }
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_success_and_errors() {
        assert_eq!(parse_answer(201, r#"{"agent_id":"ag-7"}"#).unwrap(), "ag-7");
        let e = parse_answer(
            401,
            r#"{"error":{"code":"invalid_enrollment_token","message":"used"}}"#,
        );
        assert!(matches!(e, Err(EnrollError::InvalidToken { ref message }) if message == "used"));
        let e = parse_answer(401, "").unwrap_err().to_string();
        assert!(e.contains("invalid_enrollment_token"), "{e}");
        assert!(matches!(
            parse_answer(201, "<html>"),
            Err(EnrollError::Unexpected { status: 201, .. })
        ));
        assert!(matches!(
            parse_answer(500, "oops"),
            Err(EnrollError::Unexpected { status: 500, .. })
        ));
    }

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error_and_enrolling_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = enroll(
            &ControlPlaneConfig::plaintext(format!("http://{addr}")),
            "tok",
            dir.path(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, EnrollError::Unreachable { .. }), "{err}");
        identity::write_identity(
            dir.path(),
            &IdentityFile {
                agent_id: "a".into(),
                server: "s".into(),
            },
        )
        .unwrap();
        let err = enroll(
            &ControlPlaneConfig::plaintext(format!("http://{addr}")),
            "tok",
            dir.path(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, EnrollError::AlreadyEnrolled { .. }), "{err}");
    }
}
