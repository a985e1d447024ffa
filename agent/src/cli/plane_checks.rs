//! `doctor`'s checks of the control plane: `GET /healthz`, TLS (verified exactly as the
//! running agent verifies it: the same `tls::Trust` from `ca_file`/`pin_sha256`/system
//! roots), the WebSocket upgrade at the agent endpoint, and clock skew read from the
//! `Date` header of the `/healthz` answer.
//!
//! `/healthz` is fetched with a minimal HTTP/1.1 exchange over the agent's own TLS dial
//! rather than reqwest, so the TLS check tests the trust the daemon uses and the `Date`
//! header comes with it. Both go through the HTTP proxy the environment names for the
//! plane, as the daemon's connection does (`proxy_tunnel`).

use super::check::Outcome;
use super::checks::host_port;
use crate::config::{AgentConfig, ControlPlaneConfig};
use crate::plane::connection::{self, ConnectionError};
use crate::plane::proxy_tunnel::{self, ProxyEnv, Route};
use crate::plane::tls::Trust;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Time allowed for one whole network check.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/healthz` answer read.
const MAX_ANSWER: u64 = 64 * 1024;
/// Clock difference beyond which command deadlines and expiries become unreliable.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// What to do about a refused certificate.
const TLS_FIX: &str = "set control_plane.ca_file to the CA bundle that signed the plane's \
                       certificate (or pin_sha256 to its fingerprint), and check this box's clock";
/// What to do about a proxy that cannot be used or refuses the tunnel.
const PROXY_FIX: &str = "check HTTPS_PROXY (HTTP_PROXY for ws://), ALL_PROXY and NO_PROXY in the \
                         agent's environment (the systemd drop-in, see docs/operations.md, Proxy)";

/// Why `/healthz` could not be fetched.
#[derive(Debug, Clone)]
enum Failure {
    /// The trust settings are unusable (e.g. `ca_file` unreadable).
    Trust(String),
    /// The TLS handshake failed (certificate refused, pin mismatch…).
    Tls(String),
    /// The HTTP proxy is unusable, unreachable or refused the tunnel.
    Proxy(String),
    /// Anything else: DNS, connect, timeout, not HTTP.
    Other(String),
}

/// The `/healthz` answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    date: Option<OffsetDateTime>,
    /// Local time halfway through the exchange (the best estimate of when `Date` was set).
    local_mid: OffsetDateTime,
}

/// The result of `GET <url>/healthz`, from which three checks are derived.
#[derive(Debug, Clone)]
pub struct Health {
    url: String,
    tls: bool,
    anchor: Option<String>,
    /// The proxy the check went through, if any (`http://host:port`).
    via: Option<String>,
    result: Result<Reply, Failure>,
}

/// The TLS settings the agent would use for `cp` (`None` for plaintext).
fn trust_for(cp: &ControlPlaneConfig) -> Result<Option<Trust>, String> {
    if !cp.uses_tls() {
        return Ok(None);
    }
    Trust::for_plane(cp).map(Some).map_err(|e| e.to_string())
}

/// Fetches `<url>/healthz`.
pub async fn healthz(cp: &ControlPlaneConfig) -> Health {
    let base = cp.url.trim_end_matches('/');
    let url = format!("{base}/healthz");
    let proxies = ProxyEnv::from_process();
    let via = proxy_for(cp, &proxies);
    let (anchor, result) = match trust_for(cp) {
        Err(e) => (None, Err(Failure::Trust(e))),
        Ok(trust) => {
            let anchor = trust.as_ref().map(|t| t.anchor().to_string());
            let fetch = fetch(&url, trust.as_ref(), &proxies);
            let result = tokio::time::timeout(TIMEOUT, fetch)
                .await
                .unwrap_or_else(|_| Err(Failure::Other(format!("no answer within {TIMEOUT:?}"))));
            (anchor, result)
        }
    };
    Health {
        url,
        tls: cp.uses_tls(),
        anchor,
        via,
        result,
    }
}

async fn fetch(url: &str, trust: Option<&Trust>, proxies: &ProxyEnv) -> Result<Reply, Failure> {
    let other = |e: String| Failure::Other(e);
    let (host, port) = host_port(url).ok_or_else(|| other(format!("{url:?} has no host")))?;
    let path = reqwest::Url::parse(url)
        .map(|u| u.path().to_string())
        .map_err(|e| other(e.to_string()))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: farmhand-agent-doctor\r\nConnection: close\r\n\r\n"
    );
    let started = OffsetDateTime::now_utc();
    let deadline = Instant::now() + TIMEOUT;
    let proxy_failed = |e: proxy_tunnel::ProxyError| Failure::Proxy(e.to_string());
    let tcp = match proxy_tunnel::route(proxies, trust.is_some(), &host).map_err(proxy_failed)? {
        Route::Direct => TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| other(format!("cannot connect to {host}:{port}: {e}")))?,
        Route::Proxy(proxy) => proxy
            .open_tunnel(&host, port, deadline)
            .await
            .map_err(proxy_failed)?,
    };
    let answer = match trust {
        Some(trust) => {
            exchange(
                trust.handshake(&host, tcp).await.map_err(Failure::Tls)?,
                &request,
            )
            .await
        }
        None => exchange(tcp, &request).await,
    }
    .map_err(|e| other(format!("reading the answer: {e}")))?;
    let finished = OffsetDateTime::now_utc();
    let (status, date) =
        parse_answer(&answer).ok_or_else(|| other("the answer is not HTTP".into()))?;
    Ok(Reply {
        status,
        date,
        local_mid: started + (finished - started) / 2,
    })
}

/// Writes the request and reads the answer until the server closes (or the size limit).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> std::io::Result<String> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut bytes = Vec::new();
    let read = (&mut stream).take(MAX_ANSWER).read_to_end(&mut bytes).await;
    // Some TLS servers close without close_notify: keep what arrived if the head is complete.
    if let Err(e) = read {
        if !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
            return Err(e);
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The status code and the `Date` header of an HTTP/1.x answer.
fn parse_answer(text: &str) -> Option<(u16, Option<OffsetDateTime>)> {
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let date = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("date"))
        .and_then(|(_, value)| parse_http_date(value.trim()));
    Some((status, date))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form servers send today.
pub fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text, format)
        .ok()
        .map(|t| t.assume_utc())
}

impl Health {
    /// The `control plane` check: `/healthz` answered 200.
    pub fn outcome(&self) -> Outcome {
        match &self.result {
            Ok(reply) if reply.status == 200 => {
                Outcome::Ok(format!("GET {} → 200{}", self.url, through(&self.via)))
            }
            Ok(reply) => Outcome::fail(
                format!("GET {} → HTTP {}", self.url, reply.status),
                "control_plane.url must be the plane's base URL (a proxy in front of it must forward /healthz)",
            ),
            Err(Failure::Trust(e) | Failure::Tls(e)) => Outcome::fail(e.clone(), TLS_FIX),
            Err(Failure::Proxy(e)) => Outcome::fail(e.clone(), PROXY_FIX),
            Err(Failure::Other(e)) => Outcome::fail(
                format!("GET {}: {e}", self.url),
                "check control_plane.url and that this box may connect out to it (firewall, HTTPS_PROXY)",
            ),
        }
    }

    /// The `tls` check: the certificate verified with the agent's trust settings.
    pub fn tls_outcome(&self) -> Outcome {
        if !self.tls {
            return Outcome::Skip(
                "plaintext http:// (insecure_plaintext): nothing to verify".into(),
            );
        }
        let anchor = self.anchor.as_deref().unwrap_or("the configured trust");
        match &self.result {
            Ok(_) => Outcome::Ok(format!("certificate verified against {anchor}")),
            Err(Failure::Trust(e) | Failure::Tls(e)) => Outcome::fail(e.clone(), TLS_FIX),
            Err(Failure::Proxy(_) | Failure::Other(_)) => {
                Outcome::Skip("the control plane is unreachable".into())
            }
        }
    }

    /// The `clock` check: local time against the plane's `Date` header.
    pub fn clock_outcome(&self) -> Outcome {
        let Ok(reply) = &self.result else {
            return Outcome::Skip("the control plane is unreachable".into());
        };
        let Some(date) = reply.date else {
            return Outcome::Skip("the control plane's answer has no Date header".into());
        };
        // Date has whole seconds: the plane's clock was somewhere in [date, date + 1 s).
        let skew = reply.local_mid - (date + Duration::from_millis(500));
        let abs = skew.unsigned_abs();
        let direction = if skew.is_positive() {
            "ahead of"
        } else {
            "behind"
        };
        let detail = format!(
            "this box is {:.1} s {direction} the control plane",
            abs.as_secs_f64()
        );
        if abs > MAX_SKEW {
            Outcome::fail(
                format!("{detail} (more than {} s)", MAX_SKEW.as_secs()),
                "enable time synchronisation: timedatectl set-ntp true (systemd-timesyncd or chrony)",
            )
        } else {
            Outcome::Ok(detail)
        }
    }
}

/// The `agent endpoint` check: the WebSocket upgrade the daemon does, then a clean close.
pub async fn agent_endpoint(config: &AgentConfig) -> Outcome {
    let url = match config.connect_url() {
        Ok(url) => url,
        Err(e) => return Outcome::fail(e.to_string(), "fix control_plane.url"),
    };
    let trust = match trust_for(&config.control_plane) {
        Ok(trust) => trust,
        Err(_) => return Outcome::Skip("the TLS settings are unusable (see control plane)".into()),
    };
    let proxies = ProxyEnv::from_process();
    let via = proxy_for(&config.control_plane, &proxies);
    match connection::connect_via(&url, trust.as_ref(), TIMEOUT, &proxies).await {
        Ok(conn) => {
            conn.close().await;
            Outcome::Ok(format!("WebSocket upgrade at {url} accepted{}", through(&via)))
        }
        Err(ConnectionError::Tls { reason }) => Outcome::fail(reason, TLS_FIX),
        Err(ConnectionError::Proxy(e)) => Outcome::fail(e.to_string(), PROXY_FIX),
        Err(e) => Outcome::fail(
            e.to_string(),
            "a proxy or load balancer in front of the plane must pass WebSocket upgrades on /v1/agent/connect",
        ),
    }
}

/// The proxy the plane is reached through (`http://host:port`), if any.
fn proxy_for(cp: &ControlPlaneConfig, proxies: &ProxyEnv) -> Option<String> {
    let (host, _) = host_port(&cp.url)?;
    match proxy_tunnel::route(proxies, cp.uses_tls(), &host) {
        Ok(Route::Proxy(proxy)) => Some(proxy.to_string()),
        Ok(Route::Direct) | Err(_) => None,
    }
}

/// " (through the proxy http://host:port)", or nothing for a direct connection.
fn through(via: &Option<String>) -> String {
    via.as_ref()
        .map(|proxy| format!(" (through the proxy {proxy})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_date() {
        let text = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n{}";
        let (status, date) = parse_answer(text).unwrap();
        assert_eq!(status, 200);
        assert_eq!(date.unwrap().unix_timestamp(), 784_111_777);
        assert_eq!(parse_answer("HTTP/1.0 503 x\r\n\r\n").unwrap(), (503, None));
        assert!(parse_answer("SSH-2.0-OpenSSH\r\n").is_none());
        assert!(parse_http_date("yesterday").is_none());
    }

    fn health_with_date(offset: Duration, ahead: bool) -> Health {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let date = if ahead { now + offset } else { now - offset };
        Health {
            url: "http://p/healthz".into(),
            tls: false,
            anchor: None,
            via: None,
            result: Ok(Reply {
                status: 200,
                date: Some(date),
                local_mid: now + Duration::from_millis(500),
            }),
        }
    }

    #[test]
    fn clock_skew_beyond_the_limit_fails() {
        assert!(matches!(
            health_with_date(Duration::ZERO, true).clock_outcome(),
            Outcome::Ok(_)
        ));
        let fast = health_with_date(Duration::from_secs(120), true).clock_outcome();
        assert!(
            matches!(fast, Outcome::Fail { ref detail, .. } if detail.contains("behind")),
            "{fast:?}"
        );
        let slow = health_with_date(Duration::from_secs(120), false).clock_outcome();
        assert!(
            matches!(slow, Outcome::Fail { ref detail, .. } if detail.contains("ahead of")),
            "{slow:?}"
        );
        assert!(matches!(
            health_with_date(Duration::ZERO, true).tls_outcome(),
            Outcome::Skip(_)
        ));
    }
}
