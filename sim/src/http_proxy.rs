//! The per-port HTTP proxy: `Proxy-Authorization: Basic` against the port's login/password
//! (407 otherwise), `CONNECT host:port` tunnels, and absolute-form requests forwarded to the
//! origin in origin-form with `Connection: close` (one request per connection keeps the
//! byte pipe correct). A port whose quota is used up answers `403 Forbidden`.

use super::listeners::LivePort;
use super::pipe;
use std::io;
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Hop-by-hop headers the proxy consumes instead of forwarding.
const HOP_HEADERS: [&str; 4] = [
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "keep-alive",
];

#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

pub(crate) async fn serve(
    mut client: TcpStream,
    live: &LivePort,
    source: Option<IpAddr>,
) -> io::Result<()> {
    let (head, rest) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let Some(head) = parse_head(&head) else {
        return reply(&mut client, "400 Bad Request", "").await;
    };
    if !authorized(&head, live) {
        let challenge = "Proxy-Authenticate: Basic realm=\"proxy\"\r\n";
        return reply(&mut client, "407 Proxy Authentication Required", challenge).await;
    }
    if live.over_quota() {
        return reply(&mut client, "403 Forbidden", "").await;
    }
    if head.method.eq_ignore_ascii_case("CONNECT") {
        tunnel(client, &head, &rest, live, source).await
    } else {
        forward(client, &head, &rest, live, source).await
    }
}

async fn tunnel(
    mut client: TcpStream,
    head: &Head,
    rest: &[u8],
    live: &LivePort,
    source: Option<IpAddr>,
) -> io::Result<()> {
    let Some((host, port)) = split_host_port(&head.target, None) else {
        return reply(&mut client, "400 Bad Request", "").await;
    };
    let Ok(mut origin) = pipe::connect_origin(&host, port, source).await else {
        return reply(&mut client, "502 Bad Gateway", "").await;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    if !rest.is_empty() {
        pipe::send_counted(&mut origin, rest, live).await?;
    }
    pipe::pipe(client, origin, live).await
}

async fn forward(
    mut client: TcpStream,
    head: &Head,
    rest: &[u8],
    live: &LivePort,
    source: Option<IpAddr>,
) -> io::Result<()> {
    let Some((host, port, path)) = parse_absolute(&head.target) else {
        return reply(&mut client, "400 Bad Request", "").await;
    };
    let Ok(mut origin) = pipe::connect_origin(&host, port, source).await else {
        return reply(&mut client, "502 Bad Gateway", "").await;
    };
    let mut out = format!("{} {} {}\r\n", head.method, path, head.version);
    for (name, value) in &head.headers {
        if !HOP_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut first = out.into_bytes();
    first.extend_from_slice(rest);
    pipe::send_counted(&mut origin, &first, live).await?;
    pipe::pipe(client, origin, live).await
}

/// Reads up to the blank line; returns the head and whatever body bytes came with it.
async fn read_head(client: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Head {
        method: method.into(),
        target: target.into(),
        version: version.into(),
        headers,
    })
}

fn authorized(head: &Head, live: &LivePort) -> bool {
    let Some((_, value)) = head
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("proxy-authorization"))
    else {
        return false;
    };
    let Some(decoded) = super::util::basic_credentials(value) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    live.credentials_match(&decoded[..colon], &decoded[colon + 1..])
}

/// `http://host[:port][/path]` → (host, port, origin-form path).
fn parse_absolute(target: &str) -> Option<(String, u16, String)> {
    let scheme_end = target.find("://")?;
    if !target[..scheme_end].eq_ignore_ascii_case("http") {
        return None;
    }
    let after = &target[scheme_end + 3..];
    let (authority, path) = match after.find(['/', '?']) {
        Some(i) if after[i..].starts_with('?') => (&after[..i], format!("/{}", &after[i..])),
        Some(i) => (&after[..i], after[i..].to_string()),
        None => (after, "/".to_string()),
    };
    let (host, port) = split_host_port(authority, Some(80))?;
    Some((host, port, path))
}

/// `host:port`, `[v6]:port`, or a bare host when `default` is given.
fn split_host_port(authority: &str, default: Option<u16>) -> Option<(String, u16)> {
    let authority = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().ok()?),
            None if after.is_empty() => (host, default?),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default?),
        }
    };
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

async fn reply(client: &mut TcpStream, status: &str, extra: &str) -> io::Result<()> {
    let msg = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split() {
        assert_eq!(
            split_host_port("example.com:8080", None),
            Some(("example.com".into(), 8080))
        );
        assert_eq!(
            split_host_port("[::1]:443", None),
            Some(("::1".into(), 443))
        );
        assert_eq!(split_host_port("[::1]", Some(80)), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("example.com", None), None);
        assert_eq!(split_host_port("example.com:x", None), None);
        assert_eq!(split_host_port(":80", None), None);
    }

    #[test]
    fn absolute_targets_parse() {
        assert_eq!(
            parse_absolute("http://127.0.0.1:9000/a/b?c=1"),
            Some(("127.0.0.1".into(), 9000, "/a/b?c=1".into()))
        );
        assert_eq!(
            parse_absolute("HTTP://h"),
            Some(("h".into(), 80, "/".into()))
        );
        assert_eq!(
            parse_absolute("http://h?q"),
            Some(("h".into(), 80, "/?q".into()))
        );
        assert_eq!(parse_absolute("https://h/"), None);
        assert_eq!(parse_absolute("/relative"), None);
    }

    #[test]
    fn heads_parse() {
        let head = parse_head(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic eA==\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.headers.len(), 2);
        assert!(parse_head(b"GARBAGE\r\n\r\n").is_none());
    }
}
