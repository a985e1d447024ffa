//! The control-plane WebSocket through an HTTP proxy: which proxy the standard environment
//! names for a URL (`route`), and the `CONNECT` tunnel through it (`connect`).
//!
//! Enrollment uses reqwest, which honours the proxy variables by itself; the WebSocket dials
//! its own `TcpStream`, so without this module a box that reaches the internet only
//! through a proxy could enroll but never connect. The rules mirror reqwest 0.13
//! (hyper-util's `Matcher::from_env`), which follow curl:
//!
//! - `wss://` uses `HTTPS_PROXY`/`https_proxy`, `ws://` uses `HTTP_PROXY`/`http_proxy`; either
//!   falls back to `ALL_PROXY`/`all_proxy`. The upper-case name wins when both are set; an
//!   empty value, a value that is not a URL or an unknown scheme counts as unset (reqwest
//!   ignores those too). A value without a scheme means `http://`; without a port, 80.
//! - `NO_PROXY`/`no_proxy` is a comma list: `*` (every host), IP addresses, CIDR blocks
//!   (`10.0.0.0/8`, `fd00::/8`), and domains, which match themselves and their subdomains
//!   with or without a leading dot (`example.com` and `.example.com` both match
//!   `plane.example.com`). Names are not resolved: `localhost` does not match `127.0.0.1`.
//!   One deviation from reqwest: `*` also matches IP-literal hosts, as in curl.
//! - Under CGI (`REQUEST_METHOD` set) every variable is ignored ("httpoxy"), as in reqwest.
//!
//! Only `http://` proxies are supported: an `https://` or `socks*://` proxy for the plane
//! is a clear error, not a silent direct connection. Userinfo in the proxy URL becomes a
//! `Proxy-Authorization: Basic` header, which is never logged (`Debug` shows `***`).
//! The TLS handshake and its verification run inside the tunnel, unchanged, with the
//! plane's host as the server name: the proxy sees only `CONNECT host:port`.

mod connect;
mod no_proxy;
#[cfg(test)]
mod tests;

pub use connect::MAX_RESPONSE_HEAD;

use crate::base::masked::Masked;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use no_proxy::NoProxy;
use std::fmt;

/// The variables read, in the order each pair is consulted.
const HTTPS_VARS: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
const HTTP_VARS: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const ALL_VARS: [&str; 2] = ["ALL_PROXY", "all_proxy"];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// Set by CGI servers; a request header could then set `HTTP_PROXY` ("httpoxy").
const CGI_VAR: &str = "REQUEST_METHOD";

/// Why the plane cannot be reached through the proxy. Every message names the proxy
/// without its credentials.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The variable names a proxy kind the WebSocket cannot use.
    #[error("{variable} names a {scheme}:// proxy, but the agent's connection to the control plane supports only http:// proxies (HTTP CONNECT); set {variable} to an http:// proxy or add the plane's host to NO_PROXY")]
    UnsupportedScheme {
        /// The variable that was used, e.g. `HTTPS_PROXY`.
        variable: &'static str,
        /// Its scheme, e.g. `socks5`.
        scheme: String,
    },
    /// The proxy itself cannot be reached.
    #[error("cannot connect to the proxy {proxy}: {detail}")]
    Unreachable {
        /// The proxy, `http://host:port`.
        proxy: String,
        /// Why.
        detail: String,
    },
    /// The proxy answered `CONNECT` with a status other than 2xx.
    #[error("the proxy {proxy} refused the tunnel to {target}: HTTP {status} {reason}{}", refusal_hint(*status, *sent_credentials))]
    Refused {
        /// The proxy.
        proxy: String,
        /// `host:port` asked for.
        target: String,
        /// The status code, e.g. 407.
        status: u16,
        /// The reason phrase, as sent.
        reason: String,
        /// Whether a `Proxy-Authorization` header was sent.
        sent_credentials: bool,
    },
    /// The proxy closed the connection before its answer was complete.
    #[error("the proxy {proxy} closed the connection before answering CONNECT {target}")]
    Closed {
        /// The proxy.
        proxy: String,
        /// `host:port` asked for.
        target: String,
    },
    /// The answer's head exceeded [`MAX_RESPONSE_HEAD`].
    #[error("the proxy {proxy}'s answer to CONNECT is larger than {limit} bytes")]
    TooLarge {
        /// The proxy.
        proxy: String,
        /// The limit, bytes.
        limit: usize,
    },
    /// The answer is not an HTTP/1.x response.
    #[error("the proxy {proxy} answered CONNECT with something that is not HTTP/1.x: {detail}")]
    Malformed {
        /// The proxy.
        proxy: String,
        /// What is wrong.
        detail: String,
    },
    /// Connecting to the proxy and its answer did not finish within the connect timeout.
    #[error("the proxy {proxy} did not open the tunnel to {target} in time")]
    Timeout {
        /// The proxy.
        proxy: String,
        /// `host:port` asked for.
        target: String,
    },
    /// Writing the request or reading the answer failed.
    #[error("talking to the proxy {proxy} failed: {detail}")]
    Io {
        /// The proxy.
        proxy: String,
        /// Why.
        detail: String,
    },
}

fn refusal_hint(status: u16, sent_credentials: bool) -> &'static str {
    match (status, sent_credentials) {
        (407, false) => " (the proxy wants credentials: put them in the proxy URL, http://user:password@host:port)",
        (407, true) => " (the proxy rejected the credentials in the proxy URL)",
        (403, _) => " (the proxy does not allow tunnels to this host or port)",
        _ => "",
    }
}

/// The proxy variables as read once from an environment. Tests build their own, so no
/// test has to change the process environment.
#[derive(Clone, Default)]
pub struct ProxyEnv {
    vars: Vec<(&'static str, String)>,
}

impl ProxyEnv {
    /// The process's variables.
    pub fn from_process() -> ProxyEnv {
        ProxyEnv::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The proxy variables among `vars` (others are ignored).
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> ProxyEnv {
        let known = [HTTPS_VARS, HTTP_VARS, ALL_VARS, NO_PROXY_VARS, [CGI_VAR; 2]];
        let vars = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let name = known.iter().flatten().find(|n| **n == k.as_ref())?;
                Some((*name, v.into()))
            })
            .collect();
        ProxyEnv { vars }
    }

    /// The first of `names` that is set (even to an empty value), as reqwest reads them.
    fn first(&self, names: [&'static str; 2]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|name| {
            self.vars
                .iter()
                .find(|(k, _)| k == name)
                .map(|(k, v)| (*k, v.as_str()))
        })
    }
}

impl fmt::Debug for ProxyEnv {
    /// Names only: proxy URLs may carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(k, _)| *k).collect();
        f.debug_struct("ProxyEnv").field("set", &names).finish()
    }
}

/// How to reach the plane.
#[derive(Debug, Clone)]
pub enum Route {
    /// A direct TCP connection.
    Direct,
    /// A `CONNECT` tunnel through this proxy.
    Proxy(HttpProxy),
}

/// An `http://` proxy taken from the environment.
#[derive(Clone)]
pub struct HttpProxy {
    host: String,
    port: u16,
    /// The whole `Proxy-Authorization` value (`Basic …`), when the URL had userinfo.
    authorization: Option<Masked>,
    variable: &'static str,
}

impl HttpProxy {
    /// The variable it came from, e.g. `HTTPS_PROXY`.
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    /// Host (without IPv6 brackets) and port of the proxy itself.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

impl fmt::Display for HttpProxy {
    /// `http://host:port`, never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", authority(&self.host, self.port))
    }
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProxy")
            .field("url", &self.to_string())
            .field("variable", &self.variable)
            .field("authorization", &self.authorization)
            .finish()
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// How to reach `host` (without IPv6 brackets) for a `wss://` (`secure`) or `ws://` URL.
pub fn route(env: &ProxyEnv, secure: bool, host: &str) -> Result<Route, ProxyError> {
    if env.first([CGI_VAR; 2]).is_some() {
        return Ok(Route::Direct);
    }
    let no_proxy = env.first(NO_PROXY_VARS).map(|(_, v)| NoProxy::parse(v));
    if no_proxy.is_some_and(|n| n.matches(host)) {
        return Ok(Route::Direct);
    }
    let scheme_vars = if secure { HTTPS_VARS } else { HTTP_VARS };
    let chosen = match env.first(scheme_vars).and_then(|(k, v)| parse_proxy(k, v)) {
        Some(proxy) => Some(proxy),
        None => env.first(ALL_VARS).and_then(|(k, v)| parse_proxy(k, v)),
    };
    match chosen {
        None => Ok(Route::Direct),
        Some(proxy) => proxy.map(Route::Proxy),
    }
}

/// The proxy `value` of `variable` names; `None` when reqwest would ignore it.
fn parse_proxy(variable: &'static str, value: &str) -> Option<Result<HttpProxy, ProxyError>> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let url = if value.contains("://") {
        reqwest::Url::parse(value).ok()?
    } else {
        reqwest::Url::parse(&format!("http://{value}")).ok()?
    };
    match url.scheme() {
        "http" => {}
        "https" | "socks4" | "socks4a" | "socks5" | "socks5h" => {
            return Some(Err(ProxyError::UnsupportedScheme {
                variable,
                scheme: url.scheme().to_string(),
            }))
        }
        _ => return None,
    }
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let authorization = (!url.username().is_empty()).then(|| {
        let user = percent_decode(url.username());
        let password = url.password().map(percent_decode).unwrap_or_default();
        let credentials = STANDARD.encode(format!("{user}:{password}"));
        Masked::new(format!("Basic {credentials}"))
    });
    Some(Ok(HttpProxy {
        host,
        port: url.port().unwrap_or(80),
        authorization,
        variable,
    }))
}

/// Decodes `%XX` escapes (userinfo in a URL is percent-encoded); invalid escapes stay.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
