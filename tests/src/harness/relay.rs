//! A recording WebSocket relay between an agent and the control plane.
//!
//! Client frames on the wire are masked, so a byte-level capture would not show their
//! content; the relay terminates the WebSocket on both sides and keeps every message the
//! control plane *received*, which the credential-canary test searches.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    received_by_plane: Arc<Mutex<Vec<String>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Relay {
    /// Relays every connection on a fresh 127.0.0.1 port to `upstream_ws`
    /// (e.g. `ws://127.0.0.1:7000/v1/agent/connect`).
    pub async fn start(upstream_ws: &str) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (token, log, upstream) = (stop.clone(), received.clone(), upstream_ws.to_owned());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                if let Ok((tcp, _)) = accepted {
                    tokio::spawn(relay_one(tcp, upstream.clone(), log.clone(), token.clone()));
                }
            }
        });
        Ok(Relay {
            addr,
            received_by_plane: received,
            _stop: stop.drop_guard(),
        })
    }

    /// The base URL agents should be configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every text message the control plane received through the relay.
    pub fn received_by_plane(&self) -> Vec<String> {
        self.received_by_plane
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

async fn relay_one(
    tcp: tokio::net::TcpStream,
    upstream: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
) {
    let Ok(agent) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let Ok((plane, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await else {
        return;
    };
    let (mut agent_tx, mut agent_rx) = agent.split();
    let (mut plane_tx, mut plane_rx) = plane.split();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            msg = agent_rx.next() => {
                let Some(Ok(msg)) = msg else { let _ = plane_tx.close().await; return };
                if let Message::Text(text) = &msg {
                    if let Ok(mut log) = log.lock() {
                        log.push(text.to_string());
                    }
                }
                if plane_tx.send(msg).await.is_err() { return }
            }
            msg = plane_rx.next() => {
                let Some(Ok(msg)) = msg else { let _ = agent_tx.close().await; return };
                if agent_tx.send(msg).await.is_err() { return }
            }
        }
    }
}
