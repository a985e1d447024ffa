//! Webhooks: operators register endpoints (`endpoint`), every domain event
//! (`crate::events`) becomes one durable delivery per subscribed endpoint (`outbox`), and
//! ONE deliverer task (`deliverer`) POSTs them, signed (`signer`), with a bounded number in
//! flight, a per-attempt timeout and exponential backoff with jitter (`backoff`) for up
//! to `max_age_s`, after which a delivery is marked failed. Storage: `store::webhooks`.
//!
//! Guarantees (docs/api.md "Webhooks"): at-least-once — a delivery leaves the outbox only
//! after a 2xx answer or when it is given up, and survives restarts; a receiver must
//! de-duplicate on the event id. Order is NOT guaranteed (retries and concurrency reorder).
//! An emitted event is written without an fsync of its own; the deliverer flushes before
//! each round of sends, so a burst of events shares one fsync (and a graceful stop flushes
//! everything).
//!
//! Targets (`targets`, `resolve`): only globally routable addresses, plus the blocks of
//! `[webhooks] allow_private_targets`, checked when an endpoint is registered and again
//! after DNS at every delivery (SSRF; docs/security.md).
//!
//! The signing secret is needed in clear to sign, so it is sealed at rest with the
//! credential key like buyer passwords, shown once at registration and never logged.

mod backoff;
mod client;
mod deliverer;
mod endpoint;
mod outbox;
mod resolve;
pub mod signer;
mod targets;

pub use endpoint::{secret_context, MAX_ENDPOINTS};
pub use outbox::Envelope;

use crate::config::WebhooksConfig;
use crate::credentials::CredentialCipher;
use crate::metrics::PlaneMetrics;
use crate::store::{Store, StoreError};
use resolve::Targets;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::info;

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request is not acceptable (URL, event names, too many endpoints).
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client could not be set up (`[webhooks] ca_file`, TLS).
    #[error("webhooks: {0}")]
    Setup(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The webhook service: endpoint management, the outbox and the deliverer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    cipher: CredentialCipher,
    config: WebhooksConfig,
    client: reqwest::Client,
    /// Where deliveries may go; the client resolves names through it.
    targets: Arc<Targets>,
    metrics: Arc<PlaneMetrics>,
    /// Wakes the deliverer: an event was enqueued, or a delivery finished.
    wake: Notify,
    /// Events were written since the deliverer's last flush.
    unflushed: AtomicBool,
    /// Bit per [`crate::events::EventType`] some endpoint subscribes to (`outbox`).
    subscribed: AtomicU32,
}

impl Webhooks {
    /// The service over `store`; secrets are sealed with `cipher`.
    pub async fn new(
        store: Store,
        cipher: CredentialCipher,
        config: &WebhooksConfig,
        metrics: Arc<PlaneMetrics>,
    ) -> Result<Self, WebhookError> {
        let allowed = config
            .allowed_targets()
            .map_err(|e| WebhookError::Setup(e.to_string()))?;
        if !config.allow_private_targets.is_empty() {
            info!(
                blocks = %config.allow_private_targets.join(", "),
                "webhooks may be sent to these non-global addresses ([webhooks] allow_private_targets)"
            );
        }
        let targets = Targets::from_env(targets::TargetPolicy::new(allowed));
        let client = client::build(config, targets.guard())?;
        let webhooks = Webhooks {
            inner: Arc::new(Inner {
                store,
                cipher,
                config: config.clone(),
                client,
                targets,
                metrics,
                wake: Notify::new(),
                unflushed: AtomicBool::new(false),
                subscribed: AtomicU32::new(0),
            }),
        };
        webhooks.refresh_subscriptions().await?;
        Ok(webhooks)
    }
}
