//! Registering and managing endpoints: URL and event-list validation, the signing secret
//! (`whsec_` + 32 CSPRNG bytes in URL-safe base64, sealed with the credential key bound to
//! the webhook id, returned once), listing, removal and the delivery log.

use super::{WebhookError, Webhooks};
use crate::events::EventType;
use crate::ids::{now, random_bytes, random_id};
use crate::store::{Delivery, StoreError, WebhookEndpoint};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use farmhand_protocol::Secret;
use reqwest::Url;

/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most endpoints one control plane accepts (each event is stored once per endpoint).
pub const MAX_ENDPOINTS: usize = 50;
/// Most endpoints one marketplace tenant may hold, so one cannot take every slot.
pub const MAX_TENANT_ENDPOINTS: usize = 10;
/// The event name that subscribes to every type, present and future.
pub const ALL_EVENTS: &str = "*";

/// The associated data a secret is sealed with: a sealed secret cannot be moved to
/// another endpoint record.
pub fn secret_context(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

impl Webhooks {
    /// Registers an endpoint for `tenant` (`None`: an operator's); returns it with its
    /// signing secret (shown once, never again). A URL whose host is or resolves to an
    /// address the target policy forbids is refused (`resolve`).
    pub async fn register(
        &self,
        url: &str,
        events: &[String],
        tenant: Option<&str>,
    ) -> Result<(WebhookEndpoint, Secret), WebhookError> {
        let parsed = check_url(url).map_err(WebhookError::Invalid)?;
        let events = check_events(events).map_err(WebhookError::Invalid)?;
        if tenant.is_some() && events.iter().any(|e| e.starts_with("agent.")) {
            return Err(WebhookError::Invalid(
                "agent events are for operators' endpoints".into(),
            ));
        }
        // Last of the checks: it may wait on DNS.
        self.inner
            .targets
            .at_registration(&parsed)
            .await
            .map_err(WebhookError::Invalid)?;
        let url = url.to_string();
        let store = &self.inner.store;
        let existing = store.webhook_endpoints().await?;
        if existing.len() >= MAX_ENDPOINTS {
            return Err(WebhookError::Invalid(format!(
                "at most {MAX_ENDPOINTS} webhooks can be registered; delete one first"
            )));
        }
        let of_tenant = existing.iter().filter(|e| e.tenant.as_deref() == tenant);
        if tenant.is_some() && of_tenant.count() >= MAX_TENANT_ENDPOINTS {
            return Err(WebhookError::Invalid(format!(
                "at most {MAX_TENANT_ENDPOINTS} webhooks per tenant; delete one first"
            )));
        }
        let webhook_id = random_id("wh");
        let secret = Secret::new(format!(
            "whsec_{}",
            URL_SAFE_NO_PAD.encode(random_bytes::<32>())
        ));
        let endpoint = WebhookEndpoint {
            secret_sealed: self
                .inner
                .cipher
                .seal(&secret, &secret_context(&webhook_id)),
            webhook_id,
            url,
            events,
            created_at: now(),
            tenant: tenant.map(str::to_owned),
        };
        store.put_webhook_endpoint(&endpoint).await?;
        self.refresh_subscriptions().await?;
        Ok((endpoint, secret))
    }

    /// Every endpoint, oldest id order.
    pub async fn endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.inner.store.webhook_endpoints().await
    }

    /// One endpoint.
    pub async fn endpoint(&self, webhook_id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.inner.store.webhook_endpoint(webhook_id).await
    }

    /// Removes an endpoint and drops its undelivered events; `false` when unknown.
    pub async fn remove(&self, webhook_id: &str) -> Result<bool, StoreError> {
        let removed = self.inner.store.remove_webhook_endpoint(webhook_id).await?;
        self.refresh_subscriptions().await?;
        Ok(removed)
    }

    /// The newest `limit` deliveries of an endpoint.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner.store.webhook_deliveries(webhook_id, limit).await
    }
}

/// An absolute `http`/`https` URL with a host, no credentials, no fragment, at most
/// [`MAX_URL_LEN`] characters; returned parsed (the text as given is what is stored).
fn check_url(url: &str) -> Result<Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("url must be at most {MAX_URL_LEN} characters"));
    }
    let parsed = Url::parse(url).map_err(|e| format!("url is not an absolute URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url must use http or https".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("url must name a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // They would be stored and shown in clear; authenticate with the signature.
        return Err("url must not contain a user name or password".into());
    }
    if parsed.fragment().is_some() {
        return Err("url must not contain a fragment".into());
    }
    Ok(parsed)
}

/// At least one known event type (or `*`); duplicates removed, sorted.
fn check_events(events: &[String]) -> Result<Vec<String>, String> {
    if events.is_empty() {
        return Err(format!(
            "events must list at least one event type, or \"{ALL_EVENTS}\" for all"
        ));
    }
    let mut out = Vec::with_capacity(events.len());
    for name in events {
        if name != ALL_EVENTS && EventType::parse(name).is_none() {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(format!(
                "unknown event type {name:?}; known: {}, or \"{ALL_EVENTS}\"",
                known.join(", ")
            ));
        }
        out.push(name.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_without_credentials() {
        assert!(check_url("https://shop.example/hooks/farmhand?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "shop.example/hook",
            "/relative",
            "ftp://shop.example/",
            "file:///etc/passwd",
            "https://user:pw@shop.example/",
            "https://shop.example/#frag",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad} accepted");
        }
        let long = format!("https://shop.example/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long).unwrap_err().contains("2048"));
    }

    #[test]
    fn event_lists_are_checked_and_normalised() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_events(&names(&[
                "modem.online",
                "allocation.active",
                "modem.online"
            ]))
            .unwrap(),
            names(&["allocation.active", "modem.online"])
        );
        assert_eq!(check_events(&names(&["*"])).unwrap(), names(&["*"]));
        assert!(check_events(&[]).is_err());
        let err = check_events(&names(&["allocation.activ"])).unwrap_err();
        assert!(err.contains("allocation.activ") && err.contains("allocation.active"));
    }
}
