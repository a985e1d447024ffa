//! Webhook URLs to checked addresses: the [`TargetPolicy`] applied at registration (a
//! friendly 422) and at every delivery, after DNS — which is what counts, since a name can
//! be re-pointed between the two (DNS rebinding).
//!
//! At delivery the check sits inside the connection: reqwest resolves every name it
//! connects to through [`Guard`], which refuses a forbidden address before any connection
//! is made to it. reqwest does not ask the resolver about IP literals, so [`Targets::before_send`]
//! checks those. Proxies (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`): the plane then connects
//! to the proxy — the operator's choice, not checked — and the PROXY resolves the webhook's
//! host. So with a proxy variable set, `before_send` resolves the host itself and checks
//! those addresses (an unresolvable host fails the attempt rather than going unchecked); a
//! proxy that resolves the name differently is not seen, so restrict the proxy's egress too.

use super::targets::{Refused, TargetPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// Longest wait for DNS while registering: the API request must not hang on a slow resolver.
const REGISTRATION_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The variables reqwest takes its proxies from (hyper-util's `Matcher::from_env`).
const PROXY_VARIABLES: &[&str] = &[
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// What a [`Lookup`] returns.
pub(super) type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves host names: the system resolver in the plane, a fake in unit tests (a name that
/// changes its answer between registration and delivery cannot be had from real DNS).
pub(super) trait Lookup: Send + Sync + fmt::Debug {
    /// The addresses of `host`.
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The system resolver (`getaddrinfo` on tokio's blocking pool), as reqwest uses by default.
#[derive(Debug)]
struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(found.map(|a| a.ip()).collect())
        })
    }
}

/// Why an attempt was stopped before it was sent.
#[derive(Debug, thiserror::Error)]
pub(super) enum Blocked {
    /// The target is forbidden.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The host could not be resolved to be checked (only when a proxy would resolve it).
    #[error("cannot resolve {host} to check the target address: {source}")]
    Unresolved {
        /// The URL's host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
}

/// The policy, the resolver, and the proxies the plane's egress goes through.
#[derive(Debug)]
pub(super) struct Targets {
    policy: TargetPolicy,
    lookup: Arc<dyn Lookup>,
    /// A proxy variable is set: some hosts are resolved by a proxy, not by [`Guard`].
    proxied: bool,
    /// Proxy host names (lower case): connecting to the proxy itself is always allowed.
    proxy_hosts: Vec<String>,
}

impl Targets {
    /// The system resolver and the proxies of the process's environment (read once, like
    /// reqwest reads them once when the client is built).
    pub fn from_env(policy: TargetPolicy) -> Arc<Self> {
        let proxies: Vec<String> = PROXY_VARIABLES
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .filter(|value| !value.trim().is_empty())
            .collect();
        Self::new(policy, Arc::new(SystemLookup), &proxies)
    }

    /// `policy` over `lookup`, with `proxies` (URLs, or `host:port` as the variables allow).
    pub fn new(policy: TargetPolicy, lookup: Arc<dyn Lookup>, proxies: &[String]) -> Arc<Self> {
        let proxy_hosts = proxies.iter().filter_map(|p| proxy_host(p)).collect();
        Arc::new(Targets {
            policy,
            lookup,
            proxied: !proxies.is_empty(),
            proxy_hosts,
        })
    }

    /// The resolver reqwest connects through.
    pub fn guard(self: &Arc<Self>) -> Guard {
        Guard(self.clone())
    }

    /// Checks a URL being registered; the error is the API's 422 message. A name that does
    /// not resolve (yet) is accepted: every delivery checks it again.
    pub async fn at_registration(&self, url: &Url) -> Result<(), String> {
        let advice = "add it to [webhooks] allow_private_targets to allow it";
        let explain = |verb: &str, r: Refused| {
            format!("url {verb} {}, {} address; {advice}", r.address, r.a_kind())
        };
        if let Some(address) = literal(url) {
            return self
                .policy
                .check(address)
                .map_err(|r| explain("points at", r));
        }
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        let found = tokio::time::timeout(REGISTRATION_LOOKUP_TIMEOUT, self.lookup.lookup(host));
        match found.await {
            Ok(Ok(addresses)) => addresses
                .into_iter()
                .try_for_each(|a| self.policy.check(a))
                .map_err(|r| explain("resolves to", r)),
            Ok(Err(e)) => {
                debug!("a webhook host does not resolve at registration: {e}");
                Ok(())
            }
            Err(_) => {
                debug!("DNS timed out for a webhook host at registration");
                Ok(())
            }
        }
    }

    /// The checks [`Guard`] cannot make, just before an attempt: IP-literal hosts, and
    /// hosts a proxy would resolve.
    pub async fn before_send(&self, url: &Url) -> Result<(), Blocked> {
        if let Some(address) = literal(url) {
            return Ok(self.policy.check(address)?);
        }
        let Some(host) = url.host_str().filter(|_| self.proxied) else {
            return Ok(());
        };
        let addresses = self
            .lookup
            .lookup(host)
            .await
            .map_err(|source| Blocked::Unresolved {
                host: host.to_owned(),
                source,
            })?;
        for address in addresses {
            self.policy.check(address)?;
        }
        Ok(())
    }

    fn is_proxy(&self, host: &str) -> bool {
        self.proxy_hosts
            .iter()
            .any(|p| p.eq_ignore_ascii_case(host))
    }
}

/// The address of an IP-literal host (`http://127.0.0.1/`, `http://[::1]/`; the URL parser
/// already turned `http://2130706433/` and `http://0x7f.1/` into 127.0.0.1).
fn literal(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The host of a proxy variable's value (`http://proxy.lan:3128`, `proxy.lan:3128`).
fn proxy_host(value: &str) -> Option<String> {
    let value = value.trim();
    let url = if value.contains("://") {
        Url::parse(value)
    } else {
        Url::parse(&format!("http://{value}"))
    };
    url.ok()?.host_str().map(str::to_ascii_lowercase)
}

/// The DNS resolver reqwest uses: the system's answer, refused whole when any address in
/// it is forbidden (a name with one internal address is not a public endpoint).
#[derive(Debug, Clone)]
pub(super) struct Guard(Arc<Targets>);

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = targets.lookup.lookup(&host).await?;
            if !targets.is_proxy(&host) {
                for address in &addresses {
                    targets.policy.check(*address)?;
                }
            }
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Fixed answers per name; anything else does not resolve.
    #[derive(Debug)]
    struct Fixed(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for Fixed {
        fn lookup(&self, host: &str) -> LookupFuture {
            let found = self.0.get(host).cloned();
            Box::pin(async move {
                found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
            })
        }
    }

    fn targets(proxies: &[&str]) -> Arc<Targets> {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let answers = HashMap::from([
            ("public.test", vec![ip("93.184.216.34")]),
            ("localhost", vec![ip("127.0.0.1"), ip("::1")]),
            ("mixed.test", vec![ip("93.184.216.34"), ip("10.0.0.7")]),
            ("proxy.lan", vec![ip("10.0.0.3")]),
        ]);
        let proxies: Vec<String> = proxies.iter().map(|p| p.to_string()).collect();
        Targets::new(TargetPolicy::default(), Arc::new(Fixed(answers)), &proxies)
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[tokio::test]
    async fn registration_refuses_internal_literals_and_names_with_a_reason() {
        let t = targets(&[]);
        let err = t
            .at_registration(&url("http://127.0.0.1:9/x"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "url points at 127.0.0.1, a loopback address; add it to [webhooks] \
             allow_private_targets to allow it"
        );
        let err = t
            .at_registration(&url("http://localhost:9/"))
            .await
            .unwrap_err();
        assert!(
            err.starts_with("url resolves to 127.0.0.1, a loopback address"),
            "{err}"
        );
        let err = t
            .at_registration(&url("http://mixed.test/"))
            .await
            .unwrap_err();
        assert!(err.contains("10.0.0.7, a private address"), "{err}");
        // The URL parser's odd IPv4 spellings are literals too.
        for odd in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert!(t.at_registration(&url(odd)).await.is_err(), "{odd}");
        }
        assert_eq!(
            t.at_registration(&url("https://public.test/h")).await,
            Ok(())
        );
        // Not resolvable now: accepted, and checked at each delivery.
        assert_eq!(
            t.at_registration(&url("https://later.test/h")).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn the_guard_refuses_names_with_any_forbidden_address() {
        let guard = targets(&[]).guard();
        let resolve = |name: &str| guard.resolve(name.parse().unwrap());
        let found: Vec<SocketAddr> = resolve("public.test").await.unwrap().collect();
        assert_eq!(found, ["93.184.216.34:0".parse().unwrap()]);
        for forbidden in ["localhost", "mixed.test"] {
            let err = resolve(forbidden).await.err().unwrap();
            assert!(
                err.downcast_ref::<Refused>().is_some(),
                "{forbidden}: {err}"
            );
        }
        assert!(resolve("nowhere.test").await.is_err());
    }

    #[tokio::test]
    async fn proxies_are_reachable_and_proxied_hosts_are_checked_before_sending() {
        let t = targets(&["http://Proxy.lan:3128"]);
        // The proxy itself (internal, as egress proxies are) can be connected to.
        assert!(t
            .guard()
            .resolve("proxy.lan".parse().unwrap())
            .await
            .is_ok());
        // What the proxy would resolve for us is resolved and checked here first.
        assert!(matches!(
            t.before_send(&url("http://localhost:9/")).await,
            Err(Blocked::Refused(_))
        ));
        assert!(matches!(
            t.before_send(&url("http://nowhere.test/")).await,
            Err(Blocked::Unresolved { .. })
        ));
        assert!(t.before_send(&url("http://public.test/")).await.is_ok());
        // Without a proxy, names are the guard's job; literals are always checked here.
        let direct = targets(&[]);
        assert!(direct
            .before_send(&url("http://localhost:9/"))
            .await
            .is_ok());
        assert!(direct.before_send(&url("http://[::1]:9/")).await.is_err());
        assert_eq!(proxy_host("proxy.lan:3128").as_deref(), Some("proxy.lan"));
        assert_eq!(proxy_host("socks5://S.lan").as_deref(), Some("s.lan"));
    }
}
