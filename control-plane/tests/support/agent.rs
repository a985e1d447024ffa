//! A minimal fake agent: an Ed25519 identity (ring) and a WebSocket client
//! (tokio-tungstenite) that performs the handshake and lets a test send frames and answer
//! commands by hand. `reconcile` commands are answered automatically by `next_command`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::{TestPlane, PATIENCE};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::handshake::{ClientHandshake, HandshakeError, Step};
use farmhand_protocol::{
    decode, encode, AgentMessage, Command, CommandBody, CommandOutput, CommandResult, Hello,
    Inventory, Modem, Outcome, PlaneMessage, ProtocolError, ProtocolErrorCode, Reconciled, Site,
    VersionRange, Welcome, SUPPORTED_VERSIONS,
};
use futures_util::{SinkExt, StreamExt};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An agent's key and enrolled id.
#[derive(Clone)]
pub struct Identity {
    pub agent_id: String,
    pkcs8: Vec<u8>,
}

impl Identity {
    pub fn generate() -> Self {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Identity {
            agent_id: String::new(),
            pkcs8: doc.as_ref().to_vec(),
        }
    }

    pub fn with_id(self, agent_id: &str) -> Self {
        Identity {
            agent_id: agent_id.to_string(),
            ..self
        }
    }

    fn pair(&self) -> Ed25519KeyPair {
        Ed25519KeyPair::from_pkcs8(&self.pkcs8).unwrap()
    }

    pub fn public_key_b64(&self) -> String {
        STANDARD.encode(self.pair().public_key().as_ref())
    }

    /// Signs a handshake transcript with the agent's key.
    pub fn sign(&self, transcript: &[u8]) -> Vec<u8> {
        self.pair().sign(transcript).as_ref().to_vec()
    }
}

/// A DE/Vodafone-style modem that is online with an IP.
pub fn modem(imei: &str, carrier: &str) -> Modem {
    Modem {
        imei: imei.into(),
        nick: "m".into(),
        carrier: Some(carrier.into()),
        ext_ip: Some("198.51.100.11".into()),
        online: true,
        rotating: false,
        signal: Some(23),
        model: Some("E3372".into()),
        ..Modem::default()
    }
}

/// A connected, authenticated fake agent.
pub struct FakeAgent {
    pub ws: Ws,
    pub agent_id: String,
    pub welcome: Welcome,
}

/// Opens a raw WebSocket to the plane.
pub async fn open(plane: &TestPlane) -> Ws {
    tokio_tungstenite::connect_async(plane.ws_url())
        .await
        .unwrap()
        .0
}

pub async fn send(ws: &mut Ws, message: &AgentMessage) {
    ws.send(Message::text(encode(message))).await.unwrap();
}

/// The next plane message, or `None` when the connection closed. Fails after PATIENCE.
pub async fn recv(ws: &mut Ws) -> Option<PlaneMessage> {
    loop {
        let next = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("plane answered in time");
        match next {
            None | Some(Err(_)) => return None,
            Some(Ok(Message::Text(t))) => return Some(decode(t.as_str(), usize::MAX).unwrap()),
            Some(Ok(Message::Close(_))) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Asserts that the plane sends `error` with `code` and then closes.
pub async fn expect_refusal(ws: &mut Ws, code: ProtocolErrorCode) -> ProtocolError {
    let error = loop {
        match recv(ws).await {
            Some(PlaneMessage::Error(e)) => break e,
            Some(PlaneMessage::Heartbeat(_) | PlaneMessage::Command(_)) => continue,
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    };
    assert_eq!(error.code, code, "{error:?}");
    assert!(recv(ws).await.is_none(), "the plane closes after an error");
    error
}

pub fn hello(agent_id: &str, versions: VersionRange) -> AgentMessage {
    AgentMessage::Hello(Hello {
        versions,
        agent_id: agent_id.into(),
        agent_version: "test".into(),
    })
}

impl FakeAgent {
    /// Performs the handshake; the plane's refusal is returned as the error.
    pub async fn connect(
        plane: &TestPlane,
        identity: &Identity,
    ) -> Result<FakeAgent, ProtocolError> {
        Self::handshake(open(plane).await, identity).await
    }

    /// Like `connect`, but `None` when the plane refuses the upgrade itself (HTTP 503).
    pub async fn try_connect(
        plane: &TestPlane,
        identity: &Identity,
    ) -> Option<Result<FakeAgent, ProtocolError>> {
        let (ws, _) = tokio_tungstenite::connect_async(plane.ws_url())
            .await
            .ok()?;
        Some(Self::handshake(ws, identity).await)
    }

    /// Performs the handshake on an open socket.
    pub async fn handshake(mut ws: Ws, identity: &Identity) -> Result<FakeAgent, ProtocolError> {
        let (mut handshake, hello) =
            ClientHandshake::start(&identity.agent_id, "test", SUPPORTED_VERSIONS);
        send(&mut ws, &hello).await;
        loop {
            let message = recv(&mut ws)
                .await
                .expect("the plane answers the handshake");
            match handshake.receive(message, |t| identity.sign(t)) {
                Ok(Step::Send(reply)) => send(&mut ws, &reply).await,
                Ok(Step::Open { welcome, .. }) => {
                    let agent_id = identity.agent_id.clone();
                    return Ok(FakeAgent {
                        ws,
                        agent_id,
                        welcome,
                    });
                }
                Err(HandshakeError::Refused(e)) => return Err(e),
                Err(e) => panic!("{e}"),
            }
        }
    }

    pub async fn send(&mut self, message: &AgentMessage) {
        send(&mut self.ws, message).await;
    }

    pub async fn send_inventory(&mut self, modems: Vec<Modem>) {
        self.send_inventory_capped(modems, None).await;
    }

    /// An inventory announcing the seller's `max_ports_per_modem` (`None`: no field).
    pub async fn send_inventory_capped(&mut self, modems: Vec<Modem>, cap: Option<u32>) {
        let site = Site {
            public_host: "203.0.113.7".into(),
            country: "DE".into(),
            city: Some("Berlin".into()),
        };
        let inventory = Inventory {
            site,
            proxysmart_reachable: true,
            modems,
            ports: vec![],
            max_ports_per_modem: cap,
            capabilities: None,
            probes_refused: false,
        };
        self.send(&AgentMessage::Inventory(inventory)).await;
    }

    /// The next command other than `reconcile` (which is answered here); heartbeats skipped.
    pub async fn next_command(&mut self) -> Command {
        loop {
            match recv(&mut self.ws).await {
                Some(PlaneMessage::Command(c)) if matches!(c.body, CommandBody::Reconcile(_)) => {
                    let output = CommandOutput::Reconcile(Reconciled {
                        removed: vec![],
                        missing: vec![],
                    });
                    self.answer(&c.id, Outcome::Ok { output }).await;
                }
                Some(PlaneMessage::Command(c)) => return c,
                Some(PlaneMessage::Heartbeat(_)) => continue,
                other => panic!("expected a command, got {other:?}"),
            }
        }
    }

    /// The next command, `reconcile` included (heartbeats skipped).
    pub async fn next_any_command(&mut self) -> Command {
        loop {
            match recv(&mut self.ws).await {
                Some(PlaneMessage::Command(c)) => return c,
                Some(PlaneMessage::Heartbeat(_)) => continue,
                other => panic!("expected a command, got {other:?}"),
            }
        }
    }

    pub async fn answer(&mut self, id: &str, outcome: Outcome) {
        self.send(&AgentMessage::CommandResult(CommandResult {
            id: id.into(),
            outcome,
        }))
        .await;
    }
}
