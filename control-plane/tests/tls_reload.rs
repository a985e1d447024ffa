//! Replacing the control plane's TLS certificate without a restart, seen through real TLS
//! handshakes on 127.0.0.1: after a reload new connections get the new certificate while an
//! agent session opened before keeps working; a bad pair (not PEM, key of another
//! certificate, missing file) is refused and the previous certificate stays in service; an
//! expired one is served. Then the real binary: SIGHUP reloads, the log says what was
//! served or why not (never key material), and SIGHUP without `[tls]` does not end it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::config::TlsConfig;
use farmhand_control::tls::{write_self_signed, SelfSignedFiles};
use farmhand_control::{ControlPlane, Role, ServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use support::flows::{order, provision_ok};
use support::{eventually, http, modem, FakeAgent, Identity, PATIENCE};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const IMEI: &str = "350000000000042";

/// Accepts any certificate — each test asserts which one by fingerprint — but still checks
/// the handshake signature, so a certificate served with another key fails the handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A new TLS connection to `addr` and the fingerprint of the certificate it was served.
async fn dial(addr: SocketAddr) -> (TlsStream, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .unwrap();
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let fingerprint = farmhand_control::tls::fingerprint(leaf);
    (tls, fingerprint)
}

/// The fingerprint a new connection to `addr` is served.
async fn served(addr: SocketAddr) -> String {
    dial(addr).await.1
}

/// A plain-TCP front for the plane's TLS listener: every connection accepted here is a new
/// TLS connection to the plane (its fingerprint recorded in order), so the support
/// vocabulary — the raw HTTP client, the fake agent over `ws://` — runs over real TLS.
async fn tls_front(plane: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut plain, _) = listener.accept().await.unwrap();
            let (mut tls, fingerprint) = dial(plane).await;
            record.lock().unwrap().push(fingerprint);
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
            });
        }
    });
    (addr, seen)
}

/// Puts a pair in place the way an operator (or certbot's deploy hook) does: each file
/// written aside, then renamed over the live one.
fn install(live: &TlsConfig, cert: &Path, key: &Path) {
    for (from, to) in [(cert, &live.cert_file), (key, &live.key_file)] {
        let aside = to.with_extension("new");
        std::fs::copy(from, &aside).unwrap();
        std::fs::rename(&aside, to).unwrap();
    }
}

/// Two self-signed pairs, A and B, and the live file names with A installed.
fn pairs(dir: &Path) -> (SelfSignedFiles, SelfSignedFiles, TlsConfig) {
    let a = write_self_signed(&dir.join("a"), &[]).unwrap();
    let b = write_self_signed(&dir.join("b"), &[]).unwrap();
    assert_ne!(a.fingerprint, b.fingerprint);
    let live_dir = dir.join("live");
    std::fs::create_dir(&live_dir).unwrap();
    let live = TlsConfig::new(live_dir.join("cert.pem"), live_dir.join("key.pem"));
    install(&live, &a.cert_file, &a.key_file);
    (a, b, live)
}

/// Enrolls an agent identity through the (fronted) REST API.
async fn enroll(front: SocketAddr, admin: &str) -> Identity {
    let body = json!({"label": "seller-42", "ttl_s": 3600}).to_string();
    let r = http::request(
        front,
        "POST",
        "/v1/enrollment-tokens",
        Some(admin),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let identity = Identity::generate();
    let body =
        json!({"token": token, "public_key": identity.public_key_b64(), "hostname": "box-1"});
    let r = http::request(
        front,
        "POST",
        "/v1/agent/enroll",
        None,
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    identity.with_id(r.json()["agent_id"].as_str().unwrap())
}

async fn metrics(front: SocketAddr) -> String {
    let r = http::request(front, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    farmhand_ops::metrics::validate(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_the_new_pair_to_new_connections_and_keeps_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, live) = pairs(dir.path());
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        tls: Some(live.clone()),
        ..ServerConfig::default()
    };
    let plane = ControlPlane::open(config).await.unwrap();
    let admin = plane.create_key(Role::Admin, "ops").await.unwrap();
    let market = plane.create_key(Role::Marketplace, "shop").await.unwrap();
    let reloader = plane.tls_reloader().expect("[tls] is configured");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(plane.serve(listener, shutdown.clone()));
    let (front, seen) = tls_front(addr).await;

    assert_eq!(served(addr).await, a.fingerprint);
    assert_eq!(reloader.current().fingerprint, a.fingerprint);
    let text = metrics(front).await;
    assert!(
        text.contains("farmhand_tls_reloads_total{result=\"ok\"} 0")
            && text.contains("farmhand_tls_reloads_total{result=\"error\"} 0"),
        "{text}"
    );

    // An agent session over TLS with certificate A.
    let identity = enroll(front, &admin).await;
    let before = seen.lock().unwrap().len();
    let url = format!("ws://{front}/v1/agent/connect");
    let ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let mut agent = FakeAgent::handshake(ws, &identity).await.unwrap();
    assert_eq!(seen.lock().unwrap()[before], a.fingerprint);
    agent.send_inventory(vec![modem(IMEI, "Vodafone")]).await;

    // Renewal: B in place of A, reloaded in-process (what SIGHUP calls).
    install(&live, &b.cert_file, &b.key_file);
    let reloaded = reloader.reload().unwrap();
    assert_eq!(reloaded.fingerprint, b.fingerprint);
    let not_after = reloaded.not_after.expect("the expiry is read from the DER");
    let days = (not_after - time::OffsetDateTime::now_utc()).whole_days();
    assert!(
        (3640..=3650).contains(&days),
        "self-signed: ten years, not {days} days"
    );
    assert!(!reloaded.expired());
    assert_eq!(served(addr).await, b.fingerprint);
    assert_eq!(reloader.current().fingerprint, b.fingerprint);

    // The session opened with A still carries frames both ways: its modem becomes
    // available, and an allocation made over a new (B) connection is provisioned through it.
    let modems = format!("/v1/modems?imei={IMEI}&available=true");
    eventually("the session's modem is available", || async {
        let r = http::request(front, "GET", &modems, Some(&admin), None).await;
        r.json()["modems"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    let body = order("renewed-1").to_string();
    let allocating = tokio::spawn(async move {
        http::request(front, "POST", "/v1/allocations", Some(&market), Some(&body)).await
    });
    provision_ok(&mut agent).await;
    let r = allocating.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(seen.lock().unwrap().last().unwrap(), &b.fingerprint);

    refused_pairs_leave_b_in_service(&reloader, &live, &a, &b, addr).await;
    let text = metrics(front).await;
    assert!(
        text.contains("farmhand_tls_reloads_total{result=\"ok\"} 1")
            && text.contains("farmhand_tls_reloads_total{result=\"error\"} 4"),
        "{text}"
    );

    // Expired is served (agents pinning the certificate do not check dates), only warned.
    let expired = expired_pair(&dir.path().join("expired"));
    install(&live, &expired.0, &expired.1);
    let summary = reloader.reload().unwrap();
    assert!(summary.expired(), "{summary:?}");
    assert_eq!(served(addr).await, summary.fingerprint);

    drop(agent);
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("plane stops in time")
        .unwrap()
        .unwrap();
}

/// Each bad pair is refused, naming the file, and new connections still get B.
async fn refused_pairs_leave_b_in_service(
    reloader: &farmhand_control::tls::TlsReloader,
    live: &TlsConfig,
    a: &SelfSignedFiles,
    b: &SelfSignedFiles,
    addr: SocketAddr,
) {
    let cert = live.cert_file.display().to_string();
    let key = live.key_file.display().to_string();
    // Not PEM at all.
    std::fs::write(&live.cert_file, "garbage, not a certificate\n").unwrap();
    let error = reloader.reload().unwrap_err().to_string();
    assert!(
        error.contains(&cert) && error.contains("no PEM certificate"),
        "{error}"
    );
    assert_eq!(served(addr).await, b.fingerprint);

    // A's certificate with B's key: the key does not match.
    install(live, &a.cert_file, &b.key_file);
    let error = reloader.reload().unwrap_err().to_string();
    assert!(
        error.contains("does not match") && error.contains(&cert) && error.contains(&key),
        "{error}"
    );
    assert_eq!(served(addr).await, b.fingerprint);

    // PEM armour around bytes that are no key.
    install(live, &b.cert_file, &b.key_file);
    let bogus = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n";
    std::fs::write(&live.key_file, bogus).unwrap();
    let error = reloader.reload().unwrap_err().to_string();
    assert!(
        error.contains(&key) && error.contains("unusable private key"),
        "{error}"
    );
    assert_eq!(served(addr).await, b.fingerprint);

    // Missing.
    std::fs::remove_file(&live.key_file).unwrap();
    let error = reloader.reload().unwrap_err().to_string();
    assert!(error.contains(&key), "{error}");
    assert_eq!(served(addr).await, b.fingerprint);
    assert_eq!(reloader.current().fingerprint, b.fingerprint);
    install(live, &b.cert_file, &b.key_file);
}

/// A self-signed pair whose certificate expired yesterday: (cert.pem, key.pem).
fn expired_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// The real `farmhand-control serve`, its JSON log lines read on a thread.
struct Plane {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for the final secret check.
    log: Vec<String>,
}

impl Plane {
    fn start(dir: &Path, config: &str) -> Plane {
        let file = dir.join("control.toml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_farmhand-control"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("RUST_LOG")
            .env_remove("FARMHAND_LOG_FORMAT")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Plane {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The next log line whose message starts with `message`, as JSON; fails after PATIENCE.
    fn wait_for(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {message:?} in time: {:?}", self.log));
            self.log.push(line.clone());
            let json: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            let text = json["fields"]["message"].as_str().unwrap_or_default();
            if text.starts_with(message) {
                return json;
            }
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// SIGTERM, then the exit status must be success.
    fn stop(mut self) -> Vec<String> {
        self.signal("-TERM");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(Instant::now() < deadline, "the plane did not stop in time");
            // Polling a child's exit status: there is no portable wait with a deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
        // Every line up to the end of stderr, which closes with the process.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr did not close in time"),
            }
        }
        std::mem::take(&mut self.log)
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        // Only when a test failed midway: `stop` has already reaped the child.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_the_real_process_and_logs_what_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, live) = pairs(dir.path());
    let config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        live.cert_file, live.key_file
    );
    let mut plane = Plane::start(dir.path(), &config);
    let listening = plane.wait_for("listening on https://");
    let message = listening["fields"]["message"].as_str().unwrap();
    let addr: SocketAddr = message["listening on https://".len()..].parse().unwrap();
    assert_eq!(listening["fields"]["certificate"], json!(a.fingerprint));
    assert!(listening["fields"]["not_after"]
        .as_str()
        .unwrap()
        .starts_with("20"));
    assert_eq!(served(addr).await, a.fingerprint);

    install(&live, &b.cert_file, &b.key_file);
    plane.signal("-HUP");
    let reloaded = plane.wait_for("TLS certificate reloaded");
    assert_eq!(reloaded["level"], json!("INFO"), "{reloaded}");
    assert_eq!(reloaded["fields"]["certificate"], json!(b.fingerprint));
    assert_eq!(reloaded["fields"]["previous"], json!(a.fingerprint));
    assert!(reloaded["fields"]["not_after"]
        .as_str()
        .unwrap()
        .starts_with("20"));
    assert_eq!(served(addr).await, b.fingerprint);

    // A's key with B's certificate: refused, B still served, the process still up.
    std::fs::copy(&a.key_file, &live.key_file).unwrap();
    plane.signal("-HUP");
    let refused = plane.wait_for("TLS certificate reload refused");
    assert_eq!(refused["level"], json!("ERROR"), "{refused}");
    let error = refused["fields"]["error"].as_str().unwrap();
    let key = live.key_file.display().to_string();
    assert!(
        error.contains(&key) && error.contains("does not match"),
        "{error}"
    );
    assert_eq!(refused["fields"]["still_serving"], json!(b.fingerprint));
    assert_eq!(served(addr).await, b.fingerprint);

    let log = plane.stop();
    let key_body = |path: &Path| {
        let pem = std::fs::read_to_string(path).unwrap();
        pem.lines().nth(1).unwrap().to_owned()
    };
    for line in &log {
        assert!(!line.contains("PRIVATE KEY"), "{line}");
        for key in [&a.key_file, &b.key_file] {
            assert!(
                !line.contains(&key_body(key)),
                "key material logged: {line}"
            );
        }
    }
}

#[tokio::test]
async fn sighup_without_tls_is_logged_and_does_not_stop_the_plane() {
    let dir = tempfile::tempdir().unwrap();
    let mut plane = Plane::start(dir.path(), "");
    plane.wait_for("listening on http://");
    plane.signal("-HUP");
    let warned = plane.wait_for("SIGHUP: nothing to reload");
    assert_eq!(warned["level"], json!("WARN"), "{warned}");
    // Still running: SIGTERM stops it cleanly (exit 0), which SIGHUP's default would not.
    plane.stop();
}
