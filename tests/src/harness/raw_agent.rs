//! A hand-driven protocol peer for tests that must say things a real agent never would:
//! unenrolled keys, garbage frames, oversized frames.

use farmhand_protocol::handshake::{ClientHandshake, Step};
use farmhand_protocol::{
    decode, encode, AgentMessage, PlaneMessage, DEFAULT_MAX_FRAME_BYTES, SUPPORTED_VERSIONS,
};
use futures_util::{SinkExt, StreamExt};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket connection to the agent gateway.
#[derive(Debug)]
pub struct RawAgent {
    ws: Ws,
}

/// What the plane did in answer.
#[derive(Debug, PartialEq)]
pub enum Heard {
    /// A protocol message.
    Message(Box<PlaneMessage>),
    /// The connection closed (or broke).
    Closed,
}

/// A fresh Ed25519 key pair (PKCS#8) and its raw public key.
pub fn new_key() -> anyhow::Result<(Ed25519KeyPair, Vec<u8>)> {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("keygen"))?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| anyhow::anyhow!("pkcs8"))?;
    let public = pair.public_key().as_ref().to_vec();
    Ok((pair, public))
}

impl RawAgent {
    /// Opens `ws://…/v1/agent/connect` on the plane at `plane_url` (`http://…`).
    pub async fn connect(plane_url: &str) -> anyhow::Result<RawAgent> {
        let url = format!("{}/v1/agent/connect", plane_url.replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(RawAgent { ws })
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        Ok(self.ws.send(Message::text(text)).await?)
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, msg: &AgentMessage) -> anyhow::Result<()> {
        self.send_text(encode(msg)).await
    }

    /// The next thing the plane says (skipping pings and heartbeats), within 10 s.
    pub async fn hear(&mut self) -> anyhow::Result<Heard> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    let msg: PlaneMessage = decode(&t, DEFAULT_MAX_FRAME_BYTES)?;
                    if !matches!(msg, PlaneMessage::Heartbeat(_)) {
                        return Ok(Heard::Message(Box::new(msg)));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(Heard::Closed),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits until the plane closes the connection (after any messages), within 10 s.
    pub async fn closed(&mut self) -> anyhow::Result<()> {
        while self.hear().await? != Heard::Closed {}
        Ok(())
    }

    /// Runs the handshake as `agent_id` with `key`; returns the plane's answer to `auth`.
    pub async fn handshake(
        &mut self,
        agent_id: &str,
        key: &Ed25519KeyPair,
    ) -> anyhow::Result<Heard> {
        let (mut handshake, hello) =
            ClientHandshake::start(agent_id, "raw-test", SUPPORTED_VERSIONS);
        self.send(&hello).await?;
        let Heard::Message(msg) = self.hear().await? else {
            return Ok(Heard::Closed);
        };
        let signed = handshake.receive((*msg).clone(), |t| key.sign(t).as_ref().to_vec());
        let Ok(Step::Send(auth)) = signed else {
            // Not a challenge we would answer: the test sees what the plane sent.
            return Ok(Heard::Message(msg));
        };
        self.send(&auth).await?;
        self.hear().await
    }
}
