//! A real HTTP `CONNECT` proxy on 127.0.0.1:0 for the agent's proxy tests: it records
//! every request head, counts the tunnels it opened, and can instead demand credentials,
//! answer a fixed refusal or hang up.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the proxy answers `CONNECT`.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Opens every tunnel.
    Tunnel,
    /// Opens the tunnel only for this exact `Proxy-Authorization` value, 407 otherwise.
    RequireAuth(String),
    /// Answers this status line (e.g. "403 Forbidden") and closes.
    Answer(&'static str),
    /// Closes the connection without a word.
    Close,
}

/// What the proxy saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every request head, as received (credentials included).
    pub requests: Vec<String>,
    /// Tunnels opened to their target.
    pub tunnels: usize,
}

/// A running proxy; it stops with the test's runtime.
pub struct TestProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    seen: Arc<Mutex<Seen>>,
}

impl TestProxy {
    pub async fn start(mode: Mode) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, mode.clone(), log.clone()));
            }
        });
        TestProxy { url, seen }
    }

    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url_with(&self, userinfo: &str) -> String {
        self.url
            .replacen("http://", &format!("http://{userinfo}@"), 1)
    }

    pub fn tunnels(&self) -> usize {
        self.seen.lock().unwrap().tunnels
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().requests.clone()
    }
}

async fn serve(mut client: TcpStream, mode: Mode, seen: Arc<Mutex<Seen>>) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    seen.lock().unwrap().requests.push(head.clone());
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .to_string();
    let authorization = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_string());
    let refusal = match &mode {
        Mode::Close => return,
        Mode::Answer(status) => Some(*status),
        Mode::RequireAuth(expected) if authorization.as_ref() != Some(expected) => {
            Some("407 Proxy Authentication Required")
        }
        Mode::Tunnel | Mode::RequireAuth(_) => None,
    };
    if let Some(status) = refusal {
        let answer = format!("HTTP/1.1 {status}\r\nProxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n");
        let _ = client.write_all(answer.as_bytes()).await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    seen.lock().unwrap().tunnels += 1;
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// The request head, byte by byte so nothing of the tunnel is consumed.
async fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(client.read_u8().await.ok()?);
        if head.len() > 16 * 1024 {
            return None;
        }
    }
    String::from_utf8(head).ok()
}
