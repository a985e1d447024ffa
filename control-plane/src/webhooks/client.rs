//! The HTTP side of a delivery: one reqwest client for every endpoint (rustls with ring;
//! `https://` endpoints are verified against the system roots plus `[webhooks] ca_file`),
//! no redirects followed (a 3xx is a failed attempt: the registered URL is the one that
//! gets the events), a per-attempt timeout, and one POST per attempt. Proxy variables
//! (`HTTPS_PROXY`, `NO_PROXY`) are honoured, for planes whose egress goes through one.

use super::signer;
use super::WebhookError;
use crate::config::WebhooksConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// What one attempt sends besides the body.
#[derive(Debug)]
pub(super) struct Attempt<'a> {
    pub url: &'a str,
    pub body: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub delivery_id: &'a str,
    pub number: u32,
    pub signature: String,
}

/// Why an attempt did not deliver.
#[derive(Debug)]
pub(super) struct Failure {
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// A short description (never the body, never a header value).
    pub error: String,
}

/// The client for `config`.
pub(super) fn build(config: &WebhooksConfig) -> Result<reqwest::Client, WebhookError> {
    let mut roots = system_roots();
    if let Some(path) = &config.ca_file {
        add_ca_file(&mut roots, path)?;
    }
    if roots.is_empty() {
        warn!("no system root certificates and no [webhooks] ca_file: deliveries to https:// endpoints will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let timeout = Duration::from_secs(config.attempt_timeout_s);
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("farmhand-control/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebhookError::Setup(format!("HTTP client: {e}")))
}

fn system_roots() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    roots
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), WebhookError> {
    let fail = |detail: String| {
        WebhookError::Setup(format!("cannot use ca_file {}: {detail}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("no usable PEM certificate in the file".into()));
    }
    Ok(())
}

/// POSTs one attempt; `Ok(status)` for a 2xx answer.
pub(super) async fn post(client: &reqwest::Client, attempt: Attempt<'_>) -> Result<u16, Failure> {
    let response = client
        .post(attempt.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(signer::SIGNATURE_HEADER, attempt.signature)
        .header(signer::EVENT_ID_HEADER, attempt.event_id)
        .header(signer::EVENT_TYPE_HEADER, attempt.event_type)
        .header(signer::DELIVERY_ID_HEADER, attempt.delivery_id)
        .header(signer::ATTEMPT_HEADER, attempt.number.to_string())
        .body(attempt.body.to_string())
        .send()
        .await
        .map_err(|e| Failure {
            status: None,
            error: describe(&e),
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    Err(Failure {
        status: Some(status.as_u16()),
        error: format!("the endpoint answered HTTP {}", status.as_u16()),
    })
}

/// The error and its sources in one short line (reqwest hides the root cause otherwise).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text.chars().take(300).collect()
}
