//! The proxy decision from an environment snapshot, `NO_PROXY` matching, and the
//! `CONNECT` exchange over in-memory pipes and real sockets.

use super::connect::{parse_status, read_head, HeadError};
use super::no_proxy::NoProxy;
use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn env(vars: &[(&str, &str)]) -> ProxyEnv {
    ProxyEnv::from_vars(vars.iter().copied())
}

fn proxy_of(route: Result<Route, ProxyError>) -> HttpProxy {
    match route {
        Ok(Route::Proxy(proxy)) => proxy,
        other => panic!("expected a proxy, got {other:?}"),
    }
}

fn is_direct(route: Result<Route, ProxyError>) -> bool {
    matches!(route, Ok(Route::Direct))
}

#[test]
fn no_proxy_domains_match_themselves_and_subdomains_only() {
    let n = NoProxy::parse(" example.com , .corp.test,Internal ");
    for host in [
        "example.com",
        "plane.example.com",
        "a.b.EXAMPLE.com",
        "corp.test",
        "x.corp.test",
        "internal",
        "box.internal",
    ] {
        assert!(n.matches(host), "{host}");
    }
    for host in [
        "notexample.com",
        "example.com.evil",
        "corp.tester",
        "10.0.0.1",
    ] {
        assert!(!n.matches(host), "{host}");
    }
    assert!(!NoProxy::parse("").matches("example.com"));
    assert!(!NoProxy::parse(" , ,").matches("example.com"));
}

#[test]
fn no_proxy_star_ips_and_cidr_blocks() {
    let star = NoProxy::parse("a.test, *");
    assert!(star.matches("anything.example") && star.matches("192.0.2.1") && star.matches("::1"));
    let n = NoProxy::parse("127.0.0.1, 10.0.0.0/8, 192.168.1.77/24, fd00::/8, ::1");
    for host in [
        "127.0.0.1",
        "10.200.3.4",
        "192.168.1.5",
        "fd12::1",
        "[::1]",
        "::1",
    ] {
        assert!(n.matches(host), "{host}");
    }
    for host in [
        "127.0.0.2",
        "11.0.0.1",
        "192.168.2.1",
        "fe80::1",
        "localhost",
    ] {
        assert!(!n.matches(host), "{host}");
    }
    // Names are not resolved, and an IP entry never matches a name (nor a name an IP).
    assert!(!NoProxy::parse("localhost").matches("127.0.0.1"));
    // A bad prefix length is not a block; the entry is then a (useless) domain.
    assert!(!NoProxy::parse("10.0.0.0/33").matches("10.0.0.1"));
    assert!(NoProxy::parse("0.0.0.0/0").matches("203.0.113.9"));
}

#[test]
fn the_scheme_picks_the_variable_and_all_proxy_is_the_fallback() {
    let vars = [
        ("HTTPS_PROXY", "http://secure-proxy:3128"),
        ("HTTP_PROXY", "http://plain-proxy:8080"),
        ("ALL_PROXY", "http://all-proxy:1"),
    ];
    let secure = proxy_of(route(&env(&vars), true, "plane.example"));
    assert_eq!(secure.to_string(), "http://secure-proxy:3128");
    assert_eq!(secure.variable(), "HTTPS_PROXY");
    let plain = proxy_of(route(&env(&vars), false, "plane.example"));
    assert_eq!(plain.address(), ("plain-proxy", 8080));
    let all = env(&[("all_proxy", "http://all-proxy:1")]);
    assert_eq!(proxy_of(route(&all, true, "p")).variable(), "all_proxy");
    assert_eq!(proxy_of(route(&all, false, "p")).variable(), "all_proxy");
    assert!(is_direct(route(
        &env(&[("HTTP_PROXY", "http://x:1")]),
        true,
        "p"
    )));
    assert!(is_direct(route(&env(&[]), true, "p")));
}

#[test]
fn upper_case_wins_and_empty_or_unusable_values_fall_back_like_reqwest() {
    let both = env(&[
        ("https_proxy", "http://lower:1"),
        ("HTTPS_PROXY", "http://upper:2"),
    ]);
    assert_eq!(proxy_of(route(&both, true, "p")).address(), ("upper", 2));
    let lower = env(&[("https_proxy", "http://lower:1")]);
    assert_eq!(proxy_of(route(&lower, true, "p")).variable(), "https_proxy");
    // An empty upper-case value hides the lower-case one and falls back to ALL_PROXY.
    let empty = env(&[
        ("HTTPS_PROXY", ""),
        ("https_proxy", "http://lower:1"),
        ("ALL_PROXY", "http://all:3"),
    ]);
    assert_eq!(proxy_of(route(&empty, true, "p")).address(), ("all", 3));
    for junk in ["http://", "ftp://files:21", "::::"] {
        assert!(
            is_direct(route(&env(&[("HTTPS_PROXY", junk)]), true, "p")),
            "{junk}"
        );
    }
}

#[test]
fn no_scheme_means_http_and_no_port_means_80() {
    let p = proxy_of(route(&env(&[("HTTPS_PROXY", "proxy.lan:3128")]), true, "p"));
    assert_eq!(p.to_string(), "http://proxy.lan:3128");
    let p = proxy_of(route(
        &env(&[("HTTPS_PROXY", "http://proxy.lan/")]),
        true,
        "p",
    ));
    assert_eq!(p.address(), ("proxy.lan", 80));
    let p = proxy_of(route(
        &env(&[("HTTPS_PROXY", "http://[fd00::3]:3128")]),
        true,
        "p",
    ));
    assert_eq!(p.address(), ("fd00::3", 3128));
    assert_eq!(p.to_string(), "http://[fd00::3]:3128");
}

#[test]
fn https_and_socks_proxies_are_a_clear_error_unless_no_proxy_excludes_the_host() {
    for (value, scheme) in [
        ("https://proxy:443", "https"),
        ("socks5://proxy:1080", "socks5"),
        ("socks5h://proxy:1080", "socks5h"),
        ("socks4://proxy:1080", "socks4"),
    ] {
        let err = route(&env(&[("HTTPS_PROXY", value)]), true, "plane.example").unwrap_err();
        assert!(
            matches!(&err, ProxyError::UnsupportedScheme { variable: "HTTPS_PROXY", scheme: s } if s == scheme),
            "{err:?}"
        );
        assert!(err.to_string().contains("only http:// proxies"), "{err}");
        let excluded = env(&[("HTTPS_PROXY", value), ("NO_PROXY", "plane.example")]);
        assert!(is_direct(route(&excluded, true, "plane.example")));
    }
}

#[test]
fn no_proxy_and_cgi_bypass_the_proxy() {
    let vars = [
        ("HTTPS_PROXY", "http://proxy:3128"),
        ("no_proxy", ".example.com,10.0.0.0/8"),
    ];
    assert!(is_direct(route(&env(&vars), true, "plane.example.com")));
    assert!(is_direct(route(&env(&vars), true, "10.1.2.3")));
    proxy_of(route(&env(&vars), true, "plane.example.org"));
    let upper_first = [
        ("HTTPS_PROXY", "http://proxy:3128"),
        ("NO_PROXY", "other.test"),
        ("no_proxy", "plane.example.com"),
    ];
    proxy_of(route(&env(&upper_first), true, "plane.example.com"));
    let cgi = [
        ("HTTPS_PROXY", "http://proxy:3128"),
        ("REQUEST_METHOD", "GET"),
    ];
    assert!(is_direct(route(&env(&cgi), true, "plane.example.com")));
}

#[test]
fn credentials_become_a_basic_header_and_never_show() {
    let p = proxy_of(route(
        &env(&[("HTTPS_PROXY", "http://us%40er:p%3Ass%25word@proxy:3128")]),
        true,
        "p",
    ));
    let header = p.authorization.as_ref().unwrap().expose().to_string();
    assert_eq!(
        header,
        format!("Basic {}", STANDARD.encode("us@er:p:ss%word"))
    );
    let shown = format!("{p} {p:?}");
    assert!(
        !shown.contains("word") && !shown.contains(&header[6..]),
        "{shown}"
    );
    assert!(shown.contains("***"), "{shown}");
    let user_only = proxy_of(route(
        &env(&[("HTTPS_PROXY", "http://alice@proxy:1")]),
        true,
        "p",
    ));
    assert_eq!(
        user_only.authorization.unwrap().expose(),
        format!("Basic {}", STANDARD.encode("alice:"))
    );
    let vars = env(&[("HTTPS_PROXY", "http://u:canary-secret@proxy:1")]);
    assert!(!format!("{vars:?}").contains("canary"), "{vars:?}");
}

#[test]
fn status_lines_parse_and_garbage_does_not() {
    assert_eq!(
        parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap(),
        (200, "Connection established".into())
    );
    assert_eq!(
        parse_status(b"HTTP/1.0 407\r\n\r\n").unwrap(),
        (407, String::new())
    );
    let (_, reason) = parse_status(b"HTTP/1.1 403 \x1b[31mNo\r\n\r\n").unwrap();
    assert_eq!(reason, "?[31mNo", "control characters never reach a log");
    for bad in [
        &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 +20 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"\r\n\r\n",
    ] {
        assert!(
            parse_status(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

fn test_proxy(auth: Option<&str>) -> HttpProxy {
    HttpProxy {
        host: "127.0.0.1".into(),
        port: 3128,
        authorization: auth.map(Masked::new),
        variable: "HTTPS_PROXY",
    }
}

/// Runs the handshake against a peer that reads the request and writes `answer`; returns
/// the result, the request as received and whatever the client can still read after it.
async fn exchange(
    proxy: &HttpProxy,
    answer: &'static [u8],
) -> (Result<(), ProxyError>, String, Vec<u8>) {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let peer = tokio::spawn(async move {
        let head = read_head(&mut server).await.unwrap();
        server.write_all(answer).await.unwrap();
        drop(server);
        String::from_utf8(head).unwrap()
    });
    let result = proxy.handshake(&mut client, "plane.example", 443).await;
    let request = peer.await.unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest).await;
    (result, request, rest)
}

#[tokio::test]
async fn a_2xx_opens_the_tunnel_and_leaves_the_bytes_after_the_head() {
    let proxy = test_proxy(None);
    let (result, request, rest) = exchange(
        &proxy,
        b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nTLS",
    )
    .await;
    result.unwrap();
    assert_eq!(
        request,
        "CONNECT plane.example:443 HTTP/1.1\r\nHost: plane.example:443\r\n\r\n"
    );
    assert_eq!(rest, b"TLS", "bytes after the head belong to the tunnel");
    let (result, _, _) = exchange(&proxy, b"HTTP/1.0 204 No Content\n\n").await;
    result.unwrap();
}

#[tokio::test]
async fn credentials_are_sent_as_proxy_authorization() {
    let proxy = test_proxy(Some("Basic dTpw"));
    let (result, request, _) = exchange(&proxy, b"HTTP/1.1 200 OK\r\n\r\n").await;
    result.unwrap();
    assert!(
        request.contains("\r\nProxy-Authorization: Basic dTpw\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn non_2xx_answers_are_refusals_with_a_hint() {
    let (result, _, _) = exchange(
        &test_proxy(None),
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
    )
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, ProxyError::Refused { status: 407, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("HTTP 407 Proxy Authentication Required")
            && text.contains("plane.example:443")
            && text.contains("http://user:password@host:port"),
        "{text}"
    );
    let (result, _, _) = exchange(&test_proxy(Some("Basic x")), b"HTTP/1.1 407 No\r\n\r\n").await;
    assert!(result
        .unwrap_err()
        .to_string()
        .contains("rejected the credentials"));
    let (result, _, _) = exchange(&test_proxy(None), b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, ProxyError::Refused { status: 403, .. }),
        "{err:?}"
    );
    let (result, _, _) = exchange(&test_proxy(None), b"HTTP/1.1 302 Found\r\n\r\n").await;
    assert!(matches!(
        result.unwrap_err(),
        ProxyError::Refused { status: 302, .. }
    ));
}

#[tokio::test]
async fn malformed_closed_and_oversized_answers_are_typed() {
    let (result, _, _) = exchange(&test_proxy(None), b"SSH-2.0-OpenSSH\r\n\r\n").await;
    assert!(matches!(result.unwrap_err(), ProxyError::Malformed { .. }));
    let (result, _, _) = exchange(&test_proxy(None), b"HTTP/1.1 200 OK\r\n").await;
    assert!(matches!(result.unwrap_err(), ProxyError::Closed { .. }));
    let (result, _, _) = exchange(&test_proxy(None), b"").await;
    assert!(matches!(result.unwrap_err(), ProxyError::Closed { .. }));

    let huge = format!(
        "HTTP/1.1 200 OK\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(MAX_RESPONSE_HEAD)
    );
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let _ = read_head(&mut server).await;
        let _ = server.write_all(huge.as_bytes()).await;
    });
    let err = test_proxy(None)
        .handshake(&mut client, "plane.example", 443)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProxyError::TooLarge {
                limit: MAX_RESPONSE_HEAD,
                ..
            }
        ),
        "{err:?}"
    );
    let mut exact = std::io::Cursor::new(vec![b'x'; MAX_RESPONSE_HEAD]);
    assert!(matches!(
        read_head(&mut exact).await,
        Err(HeadError::TooLarge)
    ));
}

#[tokio::test]
async fn an_unreachable_or_silent_proxy_fails_by_the_deadline() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut proxy = test_proxy(None);
    proxy.port = port;
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = proxy
        .open_tunnel("plane.example", 443, deadline)
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::Unreachable { .. }), "{err:?}");

    // A proxy that accepts and never answers: the deadline ends the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    proxy.port = silent.local_addr().unwrap().port();
    let deadline = Instant::now() + Duration::from_millis(300);
    let err = proxy
        .open_tunnel("plane.example", 443, deadline)
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("plane.example:443"), "{err}");
}
