//! The agent's side of the handshake as a state machine that does no I/O: feed it what the
//! plane sends, send what it returns. `hello` → the plane's `challenge` (a version both
//! speak, a nonce) → `auth` (the signed transcript) → `welcome`. The agent, the swarm and
//! every test peer drive this one copy over their own sockets, so the rules — which
//! versions are acceptable, what a well-formed nonce is, what is signed — live in one place
//! (the plane's side is the gateway's `handshake`).

use crate::{
    auth_transcript, AgentMessage, Auth, Challenge, Hello, PlaneMessage, ProtocolError,
    VersionRange, Welcome, NONCE_LEN,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// What went wrong, from the agent's point of view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The plane refused (its `error` frame).
    #[error("the control plane refused: {} ({:?})", .0.message, .0.code)]
    Refused(ProtocolError),
    /// The plane sent something the protocol does not allow here.
    #[error("unexpected from the control plane: {0}")]
    Unexpected(String),
}

/// What to do after a message from the plane.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this and wait for the next message.
    Send(AgentMessage),
    /// The session is open at `version`.
    Open {
        /// The plane's `welcome`.
        welcome: Welcome,
        /// The version both sides speak from now on.
        version: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitingChallenge,
    AwaitingWelcome(u32),
    Done,
}

/// One handshake of `agent_id`, speaking `versions`.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    agent_id: String,
    versions: VersionRange,
    stage: Stage,
}

impl ClientHandshake {
    /// Starts a handshake; returns it and the `hello` to send first.
    pub fn start(
        agent_id: &str,
        agent_version: &str,
        versions: VersionRange,
    ) -> (Self, AgentMessage) {
        let hello = AgentMessage::Hello(Hello {
            versions,
            agent_id: agent_id.to_string(),
            agent_version: agent_version.to_string(),
        });
        let handshake = ClientHandshake {
            agent_id: agent_id.to_string(),
            versions,
            stage: Stage::AwaitingChallenge,
        };
        (handshake, hello)
    }

    /// Takes the plane's next message; `sign` signs the transcript with the agent's key
    /// (called once, on the challenge).
    pub fn receive(
        &mut self,
        message: PlaneMessage,
        sign: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Result<Step, HandshakeError> {
        let step = match (self.stage, message) {
            (_, PlaneMessage::Error(e)) => Err(HandshakeError::Refused(e)),
            (Stage::AwaitingChallenge, PlaneMessage::Challenge(challenge)) => {
                let nonce = self.nonce(&challenge)?;
                let transcript = auth_transcript(challenge.version, &self.agent_id, &nonce);
                let signature = STANDARD.encode(sign(&transcript));
                self.stage = Stage::AwaitingWelcome(challenge.version);
                return Ok(Step::Send(AgentMessage::Auth(Auth { signature })));
            }
            (Stage::AwaitingWelcome(version), PlaneMessage::Welcome(welcome)) => {
                self.stage = Stage::Done;
                return Ok(Step::Open { welcome, version });
            }
            (stage, other) => Err(HandshakeError::Unexpected(format!(
                "{} while {}",
                other.kind(),
                match stage {
                    Stage::AwaitingChallenge => "waiting for a challenge",
                    Stage::AwaitingWelcome(_) => "waiting for welcome",
                    Stage::Done => "the handshake is over",
                }
            ))),
        };
        self.stage = Stage::Done;
        step
    }

    /// The nonce to sign, if the plane chose a version we speak and sent a well-formed one.
    fn nonce(&self, challenge: &Challenge) -> Result<Vec<u8>, HandshakeError> {
        if challenge.version < self.versions.min || challenge.version > self.versions.max {
            return Err(HandshakeError::Unexpected(format!(
                "the plane chose unsupported version {}",
                challenge.version
            )));
        }
        STANDARD
            .decode(&challenge.nonce)
            .ok()
            .filter(|n| n.len() == NONCE_LEN)
            .ok_or_else(|| {
                HandshakeError::Unexpected(format!("nonce is not base64 of {NONCE_LEN} bytes"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{verify_auth, ProtocolErrorCode, SUPPORTED_VERSIONS};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn challenge(version: u32, nonce: &[u8]) -> PlaneMessage {
        PlaneMessage::Challenge(Challenge {
            version,
            nonce: STANDARD.encode(nonce),
        })
    }

    fn welcome() -> Welcome {
        Welcome {
            session_id: "s1".into(),
            heartbeat_interval_s: 15,
            server_time_ms: 0,
            health_limits: None,
        }
    }

    #[test]
    fn a_handshake_signs_what_the_plane_verifies_and_opens_on_welcome() {
        let key = key();
        let (mut hs, hello) = ClientHandshake::start("ag_1", "1.0", SUPPORTED_VERSIONS);
        assert!(matches!(hello, AgentMessage::Hello(h) if h.agent_id == "ag_1"));
        let nonce = [7u8; NONCE_LEN];
        let step = hs
            .receive(challenge(1, &nonce), |t| key.sign(t).as_ref().to_vec())
            .unwrap();
        let Step::Send(AgentMessage::Auth(auth)) = step else {
            panic!("expected auth, got {step:?}")
        };
        let public = key.public_key().as_ref();
        assert_eq!(
            verify_auth(public, 1, "ag_1", &nonce, &auth.signature),
            Ok(())
        );
        let step = hs.receive(PlaneMessage::Welcome(welcome()), |_| unreachable!());
        assert_eq!(
            step,
            Ok(Step::Open {
                welcome: welcome(),
                version: 1
            })
        );
    }

    #[test]
    fn bad_versions_nonces_orders_and_refusals_end_it() {
        let sign = |_: &[u8]| vec![0u8; 64];
        let fresh = || ClientHandshake::start("ag_1", "1.0", SUPPORTED_VERSIONS).0;
        let unexpected =
            |r: Result<Step, HandshakeError>| matches!(r, Err(HandshakeError::Unexpected(_)));
        assert!(unexpected(
            fresh().receive(challenge(9, &[0; NONCE_LEN]), sign)
        ));
        assert!(unexpected(fresh().receive(challenge(1, &[0; 5]), sign)));
        let not_base64 = PlaneMessage::Challenge(Challenge {
            version: 1,
            nonce: "!!".into(),
        });
        assert!(unexpected(fresh().receive(not_base64, sign)));
        assert!(unexpected(
            fresh().receive(PlaneMessage::Welcome(welcome()), sign)
        ));
        let refusal = ProtocolError {
            code: ProtocolErrorCode::AuthFailed,
            message: "no".into(),
            supported: None,
            retry_after_s: None,
        };
        assert_eq!(
            fresh().receive(PlaneMessage::Error(refusal.clone()), sign),
            Err(HandshakeError::Refused(refusal))
        );
        // After a challenge, a second challenge is out of order too.
        let mut hs = fresh();
        assert!(hs.receive(challenge(1, &[0; NONCE_LEN]), sign).is_ok());
        assert!(unexpected(hs.receive(challenge(1, &[0; NONCE_LEN]), sign)));
    }
}
