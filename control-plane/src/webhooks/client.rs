//! The HTTP side of a delivery: one reqwest client for every endpoint (rustls with ring;
//! `https://` endpoints are verified against the system roots plus `[webhooks] ca_file`),
//! no redirects followed (a 3xx is a failed attempt: the registered URL is the one that
//! gets the events), a per-attempt timeout, and one POST per attempt. Proxy variables
//! (`HTTPS_PROXY`, `NO_PROXY`) are honoured, for planes whose egress goes through one.
//! Every name is resolved through `resolve::Guard` and every attempt passes
//! `Targets::before_send` first: a forbidden target fails the attempt, naming the address.

use super::resolve::{Blocked, Guard, Targets};
use super::signer;
use super::targets::Refused;
use super::WebhookError;
use crate::config::WebhooksConfig;
use rustls::ClientConfig;
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

/// The client for `config`, resolving names through `guard`.
pub(super) fn build(
    config: &WebhooksConfig,
    guard: Guard,
) -> Result<reqwest::Client, WebhookError> {
    let roots = crate::tls::client_roots(config.ca_file.as_deref()).map_err(WebhookError::Setup)?;
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
        .dns_resolver(guard)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("farmhand-control/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebhookError::Setup(format!("HTTP client: {e}")))
}

/// Checks the target, then POSTs one attempt; `Ok(status)` for a 2xx answer.
pub(super) async fn post(
    client: &reqwest::Client,
    targets: &Targets,
    attempt: Attempt<'_>,
) -> Result<u16, Failure> {
    let failure = |error: String| Failure {
        status: None,
        error,
    };
    // Registration checked the URL's syntax; a stored URL that no longer parses fails here.
    let url = reqwest::Url::parse(attempt.url)
        .map_err(|e| failure(format!("the stored url is invalid: {e}")))?;
    targets
        .before_send(&url)
        .await
        .map_err(|e: Blocked| failure(e.to_string()))?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(signer::SIGNATURE_HEADER, attempt.signature)
        .header(signer::EVENT_ID_HEADER, attempt.event_id)
        .header(signer::EVENT_TYPE_HEADER, attempt.event_type)
        .header(signer::DELIVERY_ID_HEADER, attempt.delivery_id)
        .header(signer::ATTEMPT_HEADER, attempt.number.to_string())
        .body(attempt.body.to_string())
        .send()
        .await
        .map_err(|e| failure(describe(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    Err(Failure {
        status: Some(status.as_u16()),
        error: format!("the endpoint answered HTTP {}", status.as_u16()),
    })
}

/// The error and its sources in one short line (reqwest hides the root cause otherwise);
/// a target refused by the resolver is said plainly, without reqwest's wrapping.
fn describe(error: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        source = s.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let text = match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {}", farmhand_ops::error_chain(source)),
        None => kind.to_string(),
    };
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::resolve::{Lookup, LookupFuture};
    use crate::webhooks::targets::TargetPolicy;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A name that answers a public address to its first lookup and 127.0.0.1 after:
    /// DNS rebinding, which real DNS cannot be made to do in a test.
    #[derive(Debug, Default)]
    struct Rebinding {
        lookups: AtomicUsize,
    }

    impl Lookup for Rebinding {
        fn lookup(&self, _host: &str) -> LookupFuture {
            let first = self.lookups.fetch_add(1, Ordering::SeqCst) == 0;
            let address: IpAddr = if first { "93.184.216.34" } else { "127.0.0.1" }
                .parse()
                .unwrap();
            Box::pin(async move { Ok(vec![address]) })
        }
    }

    /// A real receiver on 127.0.0.1:0 that counts the POSTs it answers 200 to.
    async fn receiver() -> (u16, Arc<AtomicUsize>) {
        let got = Arc::new(AtomicUsize::new(0));
        let counter = got.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, got)
    }

    fn attempt(url: &str) -> Attempt<'_> {
        Attempt {
            url,
            body: "{}",
            event_id: "ev_1",
            event_type: "allocation.active",
            delivery_id: "dl_1",
            number: 1,
            signature: "t=1,v1=00".into(),
        }
    }

    async fn send(policy: TargetPolicy, url: &str) -> Result<u16, Failure> {
        let targets = Targets::new(policy, Arc::new(Rebinding::default()), &[]);
        let parsed = reqwest::Url::parse(url).unwrap();
        // Registration sees the public answer and accepts the name.
        assert_eq!(targets.at_registration(&parsed).await, Ok(()));
        let client = build(&WebhooksConfig::default(), targets.guard()).unwrap();
        post(&client, &targets, attempt(url)).await
    }

    #[tokio::test]
    async fn a_name_rebound_to_a_forbidden_address_fails_the_attempt_unsent() {
        let (port, got) = receiver().await;
        let url = format!("http://hooks.test:{port}/hooks");
        let failure = send(TargetPolicy::default(), &url).await.unwrap_err();
        assert_eq!(failure.status, None);
        assert_eq!(
            failure.error,
            "target address 127.0.0.1 is not allowed (loopback address)"
        );
        assert_eq!(
            got.load(Ordering::SeqCst),
            0,
            "nothing reached the receiver"
        );
    }

    #[tokio::test]
    async fn a_name_resolving_to_an_allowed_address_is_delivered() {
        let (port, got) = receiver().await;
        let url = format!("http://hooks.test:{port}/hooks");
        let allowed = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(send(allowed, &url).await.unwrap(), 200);
        assert_eq!(got.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn ip_literals_are_checked_before_sending() {
        let (port, got) = receiver().await;
        let targets = Targets::new(TargetPolicy::default(), Arc::new(Rebinding::default()), &[]);
        let client = build(&WebhooksConfig::default(), targets.guard()).unwrap();
        for url in [
            format!("http://127.0.0.1:{port}/hooks"),
            format!("http://[::ffff:127.0.0.1]:{port}/hooks"),
        ] {
            let failure = post(&client, &targets, attempt(&url)).await.unwrap_err();
            assert_eq!(
                failure.error, "target address 127.0.0.1 is not allowed (loopback address)",
                "{url}"
            );
        }
        assert_eq!(got.load(Ordering::SeqCst), 0);
    }
}
