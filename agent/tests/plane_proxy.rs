//! The agent's WebSocket dial to the plane through a real HTTP CONNECT proxy (plain and
//! TLS, credentials from the URL, refusals, `NO_PROXY`), against the fake plane on
//! 127.0.0.1:0, with the proxy variables passed in — never set on this process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_agent::config::pin::Pin;
use farmhand_agent::plane::connection::{self, ConnectionError};
use farmhand_agent::plane::identity::Identity;
use farmhand_agent::plane::proxy_tunnel::{ProxyEnv, ProxyError};
use farmhand_agent::plane::session::{self, HandshakeError};
use farmhand_agent::plane::tls::Trust;
use futures_util::{FutureExt, StreamExt};
use std::sync::{Arc, Mutex};
use support::plane::{PlaneConn, Stage, WAIT};
use support::proxy::{Mode, TestProxy};
use support::run_config;
use tokio::net::TcpListener;

/// Dials the fake plane with the proxy variables `proxies` and authenticates; the plane
/// side runs concurrently and sends `welcome`. Returns the session id the agent got.
async fn session_via(s: &Stage, proxies: &ProxyEnv) -> Result<String, HandshakeError> {
    let url = run_config(s.dir.path(), &s.plane_url, &s.sim)
        .connect_url()
        .unwrap();
    let identity = Identity::load(s.dir.path()).unwrap();
    let agent = async {
        let conn = connection::connect_via(&url, None, WAIT, proxies).await?;
        session::handshake(conn, &identity).await
    };
    let plane = async {
        let mut conn = PlaneConn::accept(&s.listener, &s.public_key, Arc::default()).await;
        conn.welcome().await;
        conn
    };
    tokio::pin!(agent);
    // The plane side runs only while the agent gets through: a refused agent never arrives.
    tokio::select! {
        result = &mut agent => result.map(|s| s.welcome.session_id),
        _conn = plane => agent.await.map(|s| s.welcome.session_id),
    }
}

/// The plane host as the CONNECT line names it.
fn plane_authority(s: &Stage) -> String {
    s.plane_url.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_goes_through_the_http_proxy_unless_no_proxy_names_the_plane() {
    let s = Stage::start().await;
    let proxy = TestProxy::start(Mode::Tunnel).await;
    let via_proxy = ProxyEnv::from_vars([("HTTP_PROXY", proxy.url.as_str())]);
    assert_eq!(session_via(&s, &via_proxy).await.unwrap(), "sess");
    assert_eq!(proxy.tunnels(), 1);
    let requests = proxy.requests();
    let target = plane_authority(&s);
    assert!(
        requests[0].starts_with(&format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n")),
        "{requests:?}"
    );
    assert!(!requests[0].contains("Proxy-Authorization"), "{requests:?}");

    // NO_PROXY names the plane: straight to it. ALL_PROXY is the fallback for ws:// too.
    for no_proxy in ["127.0.0.1", "127.0.0.0/8", "*"] {
        let bypass =
            ProxyEnv::from_vars([("ALL_PROXY", proxy.url.as_str()), ("no_proxy", no_proxy)]);
        assert_eq!(session_via(&s, &bypass).await.unwrap(), "sess");
    }
    // HTTPS_PROXY is for wss:// only: a ws:// plane does not use it.
    let wrong_scheme = ProxyEnv::from_vars([("HTTPS_PROXY", proxy.url.as_str())]);
    assert_eq!(session_via(&s, &wrong_scheme).await.unwrap(), "sess");
    assert_eq!(proxy.tunnels(), 1, "no further tunnel");
    assert_eq!(proxy.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_wants_credentials_gets_them_from_the_url_and_a_407_is_a_clear_error() {
    let s = Stage::start().await;
    let expected = format!("Basic {}", STANDARD.encode("agent:s:cret"));
    let proxy = TestProxy::start(Mode::RequireAuth(expected.clone())).await;

    let without = ProxyEnv::from_vars([("HTTP_PROXY", proxy.url.as_str())]);
    let err = session_via(&s, &without).await.unwrap_err();
    let HandshakeError::Connection(ConnectionError::Proxy(ProxyError::Refused { status, .. })) =
        &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 407);
    let text = err.to_string();
    assert!(
        text.contains(&proxy.url) && text.contains("HTTP 407") && text.contains("credentials"),
        "{text}"
    );
    assert_eq!(proxy.tunnels(), 0);
    assert!(
        s.listener.accept().now_or_never().is_none(),
        "nothing reached the plane"
    );

    let with = ProxyEnv::from_vars([("HTTP_PROXY", proxy.url_with("agent:s%3Acret"))]);
    assert_eq!(session_via(&s, &with).await.unwrap(), "sess");
    assert_eq!(proxy.tunnels(), 1);
    let requests = proxy.requests();
    assert!(
        requests[1].contains(&format!("\r\nProxy-Authorization: {expected}\r\n")),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_closing_and_unusable_proxies_are_typed_errors() {
    let s = Stage::start().await;
    let forbidden = TestProxy::start(Mode::Answer("403 Forbidden")).await;
    let env = ProxyEnv::from_vars([("http_proxy", forbidden.url.as_str())]);
    let err = session_via(&s, &env).await.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Connection(ConnectionError::Proxy(ProxyError::Refused {
                status: 403,
                ..
            }))
        ),
        "{err:?}"
    );
    let closing = TestProxy::start(Mode::Close).await;
    let env = ProxyEnv::from_vars([("HTTP_PROXY", closing.url.as_str())]);
    let err = session_via(&s, &env).await.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Connection(ConnectionError::Proxy(ProxyError::Closed { .. }))
        ),
        "{err:?}"
    );
    let env = ProxyEnv::from_vars([("ALL_PROXY", "socks5h://127.0.0.1:1080")]);
    let err = session_via(&s, &env).await.unwrap_err();
    assert!(err.to_string().contains("only http:// proxies"), "{err}");
    assert!(s.listener.accept().now_or_never().is_none());
}

/// A TLS WebSocket server for `localhost` only, signed by a throwaway CA written to `dir`;
/// records the server name each client asked for.
async fn tls_plane(dir: &std::path::Path) -> (String, std::path::PathBuf, Arc<Mutex<Vec<String>>>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, issuer.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "wss://localhost:{}/v1/agent/connect",
        listener.local_addr().unwrap().port()
    );
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let name = tls
                    .get_ref()
                    .1
                    .server_name()
                    .unwrap_or("(none)")
                    .to_string();
                seen.lock().unwrap().push(name);
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (url, ca_file, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_runs_tls_inside_the_tunnel_with_the_planes_name_and_the_same_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ca_file, names) = tls_plane(dir.path()).await;
    let proxy = TestProxy::start(Mode::Tunnel).await;
    let env = ProxyEnv::from_vars([("HTTPS_PROXY", proxy.url.as_str())]);
    let trust = Trust::new(Some(&ca_file), None).unwrap();
    let conn = connection::connect_via(&url, Some(&trust), WAIT, &env)
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(proxy.tunnels(), 1);
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert!(
        proxy.requests()[0].starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(*names.lock().unwrap(), vec!["localhost".to_string()]);

    // Verification is unchanged inside the tunnel: a wrong pin is still refused.
    let wrong = Trust::new(None, Some(Pin::of(b"not the plane's certificate"))).unwrap();
    let err = connection::connect_via(&url, Some(&wrong), WAIT, &env)
        .await
        .unwrap_err();
    let ConnectionError::Tls { reason } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("pin mismatch for localhost"), "{reason}");
    assert_eq!(proxy.tunnels(), 2);
}
