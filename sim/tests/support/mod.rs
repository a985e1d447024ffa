//! Shared helpers for the simulator's integration tests: start a simulator and a local HTTP
//! origin on port 0, call the API with Basic auth, poll with a deadline, minimal proxy clients.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use farmhand_sim::{self as sim, SimConfig, SimHandle};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

pub const USER: &str = "proxy";
pub const PASS: &str = "s3cret-box";

/// A running simulator plus an authenticated API client; dropping it shuts the sim down.
pub struct SimBox {
    pub sim: SimHandle,
    pub client: reqwest::Client,
    _guard: DropGuard,
}

pub async fn start_box(modems: usize) -> SimBox {
    start_box_with(SimConfig {
        modems,
        rotation_delay: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
}

/// A box with this config (its credentials replaced by `USER`/`PASS`).
pub async fn start_box_with(config: SimConfig) -> SimBox {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        username: USER.into(),
        password: PASS.into(),
        ..config
    };
    let token = CancellationToken::new();
    let sim = sim::start(listener, config, token.clone()).await.unwrap();
    let client = client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    SimBox {
        sim,
        client,
        _guard: token.drop_guard(),
    }
}

/// A reply as a client sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// The `Location` header ("" if none).
    pub location: String,
    /// Every `Set-Cookie` header.
    pub cookies: Vec<String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl SimBox {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub async fn get_as(&self, path: &str, auth: Option<(&str, &str)>) -> Reply {
        let mut req = self.client.get(self.url(path));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        into_reply(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.get_as(path, Some((USER, PASS))).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let reply = self.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        reply.json()
    }

    /// `POST /crud/store_port` with `data` = the document.
    pub async fn store_port(&self, data: &Value) -> Value {
        let reply = self.store_port_raw(data).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// `POST /crud/store_port`, the reply as it comes.
    pub async fn store_port_raw(&self, data: &Value) -> Reply {
        let reply = self
            .client
            .post(self.url("/crud/store_port"))
            .basic_auth(USER, Some(PASS))
            .form(&[("data", data.to_string())])
            .send()
            .await
            .unwrap();
        into_reply(reply).await
    }

    /// `POST path` as a form, with Basic auth and these cookies; redirects are not followed.
    pub async fn post_form(&self, path: &str, fields: &[(String, String)], cookie: &str) -> Reply {
        let mut req = self
            .client
            .post(self.url(path))
            .basic_auth(USER, Some(PASS))
            .form(fields);
        if !cookie.is_empty() {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        into_reply(req.send().await.unwrap()).await
    }

    /// `GET path` with Basic auth and these cookies.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> Reply {
        let mut req = self.client.get(self.url(path)).basic_auth(USER, Some(PASS));
        if !cookie.is_empty() {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        into_reply(req.send().await.unwrap()).await
    }

    /// The ports `list_ports_json` shows now, flattened.
    pub async fn listed(&self) -> Vec<Value> {
        let v = self.get_json("/apix/list_ports_json").await;
        match v {
            Value::Object(by_imei) => by_imei
                .into_values()
                .flat_map(|l| l.as_array().cloned().unwrap_or_default())
                .collect(),
            _ => Vec::new(),
        }
    }

    pub async fn free_ports(&self) -> Vec<u16> {
        let v = self.get_json("/apix/get_free_tcp_ports").await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as u16)
            .collect()
    }

    /// Stores and applies a port on modem `imei`; returns (port id, http port, socks port).
    pub async fn live_port(&self, imei: &str, login: &str, password: &str) -> (String, u16, u16) {
        let free = self.free_ports().await;
        let id = format!("port{}", &free[0]);
        let reply = self
            .store_port(&port_doc(imei, &id, login, password, free[0], free[1]))
            .await;
        assert_eq!(reply["result"], "success", "{reply}");
        let applied = self.get_json(&format!("/apix/apply_port?arg={id}")).await;
        assert_eq!(applied["result"], "success", "{applied}");
        (id, free[0], free[1])
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Reply {
        let reply = self
            .client
            .post(self.url(path))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        into_reply(reply).await
    }
}

/// A reqwest builder usable with `rustls-no-provider` (installs ring once per process).
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(20))
}

pub fn port_doc(imei: &str, id: &str, login: &str, password: &str, http: u16, socks: u16) -> Value {
    json!({
        "IMEI": imei, "portID": id, "portName": format!("name-{id}"),
        "proxy_login": login, "proxy_password": password,
        "http_port": http, "socks_port": socks,
    })
}

async fn into_reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let cookies = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.text().await.unwrap();
    Reply {
        status,
        content_type,
        body,
        location,
        cookies,
    }
}

#[allow(unused_imports)] // not every test binary waits
pub use farmhand_test_support::eventually;

/// A local HTTP origin: `GET /anything` → "origin saw /anything"; `/big` → 5000 bytes.
pub async fn start_origin() -> (SocketAddr, DropGuard) {
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/big", get(|| async { "x".repeat(5000) }))
        .route(
            "/ip",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .fallback(|uri: axum::http::Uri| async move { format!("origin saw {uri}") });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .unwrap();
    });
    (addr, token.drop_guard())
}

/// Sends raw bytes to `addr` and reads until the peer closes (or 10 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(out)
}

pub fn basic(login: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
}

/// Outcome of a hand-rolled SOCKS5 session.
#[derive(Debug, PartialEq, Eq)]
pub enum Socks {
    /// The server refused every offered method (0xFF).
    NoMethod,
    /// RFC 1929 status byte other than 0.
    AuthFailed(u8),
    /// CONNECT reply code other than 0.
    ConnectFailed(u8),
    /// The HTTP response read through the tunnel.
    Ok(String),
}

/// Target address forms for [`socks5_get`].
pub enum Target {
    V4(std::net::Ipv4Addr, u16),
    Domain(String, u16),
}

/// Minimal SOCKS5 client: user/pass auth, CONNECT, then `GET path` with `Connection: close`.
pub async fn socks5_get(
    proxy: u16,
    login: &str,
    password: &str,
    target: Target,
    path: &str,
) -> std::io::Result<Socks> {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).await?;
    s.write_all(&[5, 1, 2]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    if choice[1] == 0xFF {
        return Ok(Socks::NoMethod);
    }
    let mut auth = vec![1, login.len() as u8];
    auth.extend_from_slice(login.as_bytes());
    auth.push(password.len() as u8);
    auth.extend_from_slice(password.as_bytes());
    s.write_all(&auth).await?;
    let mut status = [0u8; 2];
    s.read_exact(&mut status).await?;
    if status[1] != 0 {
        return Ok(Socks::AuthFailed(status[1]));
    }
    let (mut req, host) = (
        vec![5, 1, 0],
        match &target {
            Target::V4(ip, _) => ip.to_string(),
            Target::Domain(name, _) => name.clone(),
        },
    );
    match &target {
        Target::V4(ip, port) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
            req.extend_from_slice(&port.to_be_bytes());
        }
        Target::Domain(name, port) => {
            req.extend_from_slice(&[3, name.len() as u8]);
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
        }
    }
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        _ => panic!("unexpected ATYP {}", head[3]),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await?;
    if head[1] != 0 {
        return Ok(Socks::ConnectFailed(head[1]));
    }
    let http = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(http.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(Socks::Ok(String::from_utf8_lossy(&out).into_owned()))
}
