//! One probe's fetches: the target through a sold port's HTTP proxy (absolute-form `GET`
//! with `Proxy-Authorization`) and through its SOCKS5 proxy (RFC 1928 with RFC 1929
//! username/password, `CONNECT`, then an origin-form `GET`), each timed (TCP connect,
//! first byte of the answer) and read to the IP the target says it saw. Hand-written
//! rather than through an HTTP client: the timings ARE the measurement, and the answer is
//! one small bounded read. A direct fetch (no proxy) is the plane's check of its own path.

use crate::config::ProbeTarget;
use base64::Engine;
use farmhand_protocol::Secret;
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The most of an answer read: an echo is a few bytes; anything longer is not one.
const MAX_ANSWER: usize = 4096;

/// Why a fetch failed (the wire names are `docs/api.md`'s probe reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ProbeFailure)]
pub enum Failure {
    /// The port refused or reset the TCP connection.
    ConnectFailed,
    /// No complete answer within the probe timeout.
    Timeout,
    /// The proxy refused the request (HTTP status other than 200, SOCKS5 reply not 0, or
    /// credentials refused).
    ProxyError,
    /// Something answered, but not the target's echo.
    BadReply,
    /// The first byte came later than `[probe] slow_ms`.
    Slow,
    /// The target saw another IP than the one the modem reports.
    IpMismatch,
}

impl Failure {
    /// Every failure.
    pub const ALL: [Failure; 6] = [
        Self::ConnectFailed,
        Self::Timeout,
        Self::ProxyError,
        Self::BadReply,
        Self::Slow,
        Self::IpMismatch,
    ];

    /// The failure whose [`as_str`](Self::as_str) is `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The snake_case name (metrics, audit).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectFailed => "connect_failed",
            Self::Timeout => "timeout",
            Self::ProxyError => "proxy_error",
            Self::BadReply => "bad_reply",
            Self::Slow => "slow",
            Self::IpMismatch => "ip_mismatch",
        }
    }
}

/// What one fetch measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// TCP connect time.
    pub connect: Duration,
    /// From the start to the answer's first byte.
    pub first_byte: Duration,
    /// The IP the target saw.
    pub egress_ip: IpAddr,
}

/// A failed fetch, with what was measured before it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Why.
    pub failure: Failure,
    /// TCP connect time, when it connected.
    pub connect: Option<Duration>,
}

/// The buyer's endpoint and credentials.
#[derive(Debug, Clone, Copy)]
pub struct Port<'a> {
    /// Where buyers connect.
    pub host: &'a str,
    /// The proxy port of the protocol fetched.
    pub port: u16,
    /// Buyer login.
    pub login: &'a str,
    /// Buyer password.
    pub password: &'a Secret,
}

/// Fetches `target` through the HTTP proxy at `port` within `timeout`.
pub async fn via_http(
    port: Port<'_>,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<Fetched, Failed> {
    let request = get(target, Some(&port));
    exchange(port.host, port.port, &request, timeout).await
}

/// Fetches `target` directly: the plane's own path to its echo endpoint.
pub async fn direct(target: &ProbeTarget, timeout: Duration) -> Result<Fetched, Failed> {
    exchange(&target.host, target.port, &get(target, None), timeout).await
}

/// Sends `request` to `host:port` and reads the echo, within `timeout`.
async fn exchange(
    host: &str,
    port: u16,
    request: &str,
    timeout: Duration,
) -> Result<Fetched, Failed> {
    within(timeout, async {
        let started = Instant::now();
        let (mut stream, connect) = connect(host, port, started).await?;
        send(&mut stream, request.as_bytes(), connect).await?;
        read_echo(&mut stream, started, connect).await
    })
    .await
}

/// A `GET` of `target`: in origin form, or through `proxy` in absolute form with the
/// buyer's `Proxy-Authorization`.
fn get(target: &ProbeTarget, proxy: Option<&Port<'_>>) -> String {
    let authority = target.authority();
    let (request_target, auth) = match proxy {
        Some(port) => {
            let credentials = format!("{}:{}", port.login, port.password.expose());
            let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
            (
                format!("http://{authority}{}", target.path),
                format!("Proxy-Authorization: Basic {basic}\r\n"),
            )
        }
        None => (target.path.clone(), String::new()),
    };
    format!(
        "GET {request_target} HTTP/1.1\r\nHost: {authority}\r\n{auth}\
         User-Agent: farmhand-probe\r\nConnection: close\r\n\r\n"
    )
}

/// Fetches `target` through the SOCKS5 proxy at `port` within `timeout`.
pub async fn via_socks5(
    port: Port<'_>,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<Fetched, Failed> {
    within(timeout, async {
        let started = Instant::now();
        let (mut stream, connect) = connect(port.host, port.port, started).await?;
        let refused = || Failed {
            failure: Failure::ProxyError,
            connect: Some(connect),
        };
        let broken = |_| Failed {
            failure: Failure::BadReply,
            connect: Some(connect),
        };
        send(&mut stream, &[5, 1, 2], connect).await?;
        let mut method = [0u8; 2];
        stream.read_exact(&mut method).await.map_err(broken)?;
        if method != [5, 2] {
            return Err(refused());
        }
        let (login, password) = (port.login.as_bytes(), port.password.expose().as_bytes());
        let (Ok(ulen), Ok(plen)) = (u8::try_from(login.len()), u8::try_from(password.len())) else {
            return Err(refused());
        };
        let mut auth = vec![1, ulen];
        auth.extend_from_slice(login);
        auth.push(plen);
        auth.extend_from_slice(password);
        send(&mut stream, &auth, connect).await?;
        let mut status = [0u8; 2];
        stream.read_exact(&mut status).await.map_err(broken)?;
        if status[1] != 0 {
            return Err(refused());
        }
        send(
            &mut stream,
            &connect_request(target).ok_or_else(refused)?,
            connect,
        )
        .await?;
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await.map_err(broken)?;
        if head[1] != 0 {
            return Err(refused());
        }
        let skip = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => usize::from(stream.read_u8().await.map_err(broken)?) + 2,
            _ => return Err(broken(std::io::ErrorKind::InvalidData.into())),
        };
        let mut bound = vec![0u8; skip];
        stream.read_exact(&mut bound).await.map_err(broken)?;
        send(&mut stream, get(target, None).as_bytes(), connect).await?;
        read_echo(&mut stream, started, connect).await
    })
    .await
}

/// The SOCKS5 CONNECT request for `target` (an IP literal as an address, else a name).
fn connect_request(target: &ProbeTarget) -> Option<Vec<u8>> {
    let mut request = vec![5, 1, 0];
    match target.host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        Ok(IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            request.push(3);
            request.push(u8::try_from(target.host.len()).ok()?);
            request.extend_from_slice(target.host.as_bytes());
        }
    }
    request.extend_from_slice(&target.port.to_be_bytes());
    Some(request)
}

async fn within<F>(timeout: Duration, fetch: F) -> Result<Fetched, Failed>
where
    F: std::future::Future<Output = Result<Fetched, Failed>>,
{
    tokio::time::timeout(timeout, fetch)
        .await
        .unwrap_or(Err(Failed {
            failure: Failure::Timeout,
            connect: None,
        }))
}

async fn connect(host: &str, port: u16, started: Instant) -> Result<(TcpStream, Duration), Failed> {
    match TcpStream::connect((host, port)).await {
        Ok(stream) => Ok((stream, started.elapsed())),
        Err(_) => Err(Failed {
            failure: Failure::ConnectFailed,
            connect: None,
        }),
    }
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    connect: Duration,
) -> Result<(), Failed> {
    stream.write_all(bytes).await.map_err(|_| Failed {
        // Accepted, then closed before the request was in: the proxy is not serving.
        failure: Failure::ProxyError,
        connect: Some(connect),
    })
}

/// Reads an HTTP answer (bounded) and the IP in its body.
async fn read_echo<S: AsyncRead + Unpin>(
    stream: &mut S,
    started: Instant,
    connect: Duration,
) -> Result<Fetched, Failed> {
    let fail = |failure| Failed {
        failure,
        connect: Some(connect),
    };
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let mut first_byte = None;
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| fail(Failure::ProxyError))?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| started.elapsed());
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_ANSWER || complete(&answer) {
            break;
        }
    }
    let Some(first_byte) = first_byte else {
        // Accepted and closed without a byte: a dead proxy behind a live socket.
        return Err(fail(Failure::ProxyError));
    };
    let (status, body) = split_answer(&answer).ok_or(fail(Failure::BadReply))?;
    if status != 200 {
        return Err(fail(Failure::ProxyError));
    }
    let egress_ip = echoed_ip(body).ok_or(fail(Failure::BadReply))?;
    Ok(Fetched {
        connect,
        first_byte,
        egress_ip,
    })
}

/// Whether `answer` holds a head and the whole body its `Content-Length` announces.
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|length| answer.len() >= end + 4 + length)
}

/// The status code and body of an HTTP/1.x answer.
fn split_answer(answer: &[u8]) -> Option<(u16, &[u8])> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let mut status_line = head.lines().next()?.split_whitespace();
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    Some((status, &answer[end + 4..]))
}

/// The IP an echo answered: the body itself, or its JSON `ip` field.
pub fn echoed_ip(body: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    json.get("ip")?.as_str()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_plain_or_json_and_nothing_else() {
        assert_eq!(echoed_ip(b"203.0.113.9\n"), "203.0.113.9".parse().ok());
        assert_eq!(
            echoed_ip(br#"{"ip": "2001:db8::1"}"#),
            "2001:db8::1".parse().ok()
        );
        for bad in [&b"<html>hi</html>"[..], b"", br#"{"ip": 7}"#, b"\xff\xfe"] {
            assert_eq!(echoed_ip(bad), None);
        }
    }

    #[test]
    fn a_proxy_gets_the_absolute_form_and_the_buyers_credentials_the_origin_neither() {
        let target = ProbeTarget::parse("http://127.0.0.1:8081/ip").unwrap();
        let password = Secret::new("pw");
        let port = Port {
            host: "127.0.0.1",
            port: 3128,
            login: "buyer",
            password: &password,
        };
        let proxied = get(&target, Some(&port));
        assert!(
            proxied.starts_with("GET http://127.0.0.1:8081/ip HTTP/1.1\r\n"),
            "{proxied}"
        );
        assert!(proxied.contains("Proxy-Authorization: Basic YnV5ZXI6cHc=\r\n"));
        let direct = get(&target, None);
        assert!(
            direct.starts_with("GET /ip HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"),
            "{direct}"
        );
        assert!(!direct.contains("Proxy-Authorization") && direct.ends_with("\r\n\r\n"));
    }

    #[test]
    fn answers_split_into_status_and_body() {
        let answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(split_answer(answer), Some((407, &b""[..])));
        assert!(complete(answer));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n127.0"
        ));
        assert_eq!(split_answer(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }
}
