//! The handshake, with its states as types: an [`Unauthenticated`] connection becomes an
//! [`Authenticated`] session only by completing `hello` → `challenge` → `auth` within the
//! handshake timeout, with a valid signature from an enrolled, unrevoked agent that has no
//! other live session. Every refusal is an `error` frame followed by a close.
//!
//! Failed handshakes spend the client address's budget (`ratelimit`); a client that has
//! none left is told `retry_later` with `retry_after_s` before anything else happens.

use super::connection::{refusal, unsupported, Connection};
use super::registry::{Duplicate, SessionHandle};
use super::GatewayCtx;
use crate::ids::{random_bytes, random_id};
use crate::ratelimit::ClientAddr;
use crate::store::{AgentRecord, AuditAction};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::{
    verify_auth, AgentMessage, Challenge, Command, PlaneMessage, ProtocolError, ProtocolErrorCode,
    NONCE_LEN, SUPPORTED_VERSIONS,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Commands queued for one session before dispatchers wait for room.
const COMMAND_QUEUE: usize = 32;

/// A fresh connection: nothing may happen on it but the handshake.
#[derive(Debug)]
pub struct Unauthenticated {
    conn: Connection,
    client: ClientAddr,
}

/// A registered session of a verified agent.
#[derive(Debug)]
pub struct Authenticated {
    /// The socket.
    pub conn: Connection,
    /// The agent's stored record.
    pub agent: AgentRecord,
    /// The negotiated protocol version.
    pub version: u32,
    /// The agent's software version from `hello`.
    pub agent_version: String,
    /// This session's id (also in the registry).
    pub session_id: String,
    /// The TCP peer's address.
    pub client: ClientAddr,
    /// Commands dispatched to this session.
    pub commands: mpsc::Receiver<Box<Command>>,
    /// Cancelled when the agent is revoked.
    pub kick: CancellationToken,
    /// Cancelled when a newer session of the agent took over on another node.
    pub superseded: CancellationToken,
    /// The session's fencing epoch (`leases`).
    pub epoch: u64,
}

/// A failed handshake: the error to send (`None` when the peer is already gone).
type Refusal = Option<ProtocolError>;

struct Verified {
    agent: AgentRecord,
    version: u32,
    agent_version: String,
}

impl Unauthenticated {
    /// Wraps a freshly upgraded connection from `client`.
    pub fn new(conn: Connection, client: ClientAddr) -> Self {
        Unauthenticated { conn, client }
    }

    /// Runs the handshake; on failure the refusal has been sent and the socket dropped.
    pub async fn authenticate(self, ctx: &GatewayCtx) -> Option<Authenticated> {
        if let Err(limited) = ctx.limits.agent_auth.check(&self.client.limit_key()) {
            let retry_after_s = limited.retry_after_s();
            debug!(client = %self.client, retry_after_s, "agent connection refused: too many failed handshakes");
            let error = refusal(
                ProtocolErrorCode::RetryLater,
                "too many failed handshakes from this address",
            );
            self.conn
                .refuse(ProtocolError {
                    retry_after_s: Some(retry_after_s),
                    ..error
                })
                .await;
            return None;
        }
        let client = self.client;
        match self.run(ctx).await {
            Ok(session) => Some(session),
            Err(Failed { counts }) => {
                if counts {
                    note_failure(ctx, client).await;
                }
                None
            }
        }
    }

    async fn run(mut self, ctx: &GatewayCtx) -> Result<Authenticated, Failed> {
        let limit = ctx.config.handshake_timeout();
        // Set once the agent has sent `auth`: from then on only the plane can be slow.
        let mut sent_auth = false;
        let exchange = exchange(&mut self.conn, ctx, &mut sent_auth);
        let verified = match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Some(refusal(
                ProtocolErrorCode::HandshakeTimeout,
                format!("hello and auth must complete within {} s", limit.as_secs()),
            ))),
        };
        let result = match verified {
            Ok(v) => {
                ctx.before_register.pass().await;
                register(v, ctx).await
            }
            Err(refused) => Err(refused),
        };
        match result {
            Ok((registered, commands)) => {
                Ok(registered.into_session(self.conn, self.client, commands))
            }
            Err(Some(error)) => {
                // The message may quote what the client sent (a field name): escaped.
                info!(client = %self.client, code = ?error.code, message = ?error.message, "agent handshake refused");
                let counts = counts_against_client(error.code, sent_auth);
                self.conn.refuse(error).await;
                Err(Failed { counts })
            }
            // The peer went away: its own doing, unless it had sent `auth` and gave up
            // waiting for a plane busy with a reconnect storm.
            Err(None) => Err(Failed { counts: !sent_auth }),
        }
    }
}

/// A handshake that did not produce a session; `counts` against the client's budget.
struct Failed {
    counts: bool,
}

/// Whether a refusal with `code` spends the client address's failed-handshake budget.
/// Only what the client did wrong does: not a duplicate (it proved its key: a reconnect
/// racing its old session), not the plane's own trouble (storage, shutdown), and not a
/// timeout that ran out after the agent had sent `auth` (the plane was slow — in a
/// reconnect storm, thousands of agents share one NAT address, and counting those would
/// lock every one of them out).
fn counts_against_client(code: ProtocolErrorCode, sent_auth: bool) -> bool {
    match code {
        ProtocolErrorCode::DuplicateAgent
        | ProtocolErrorCode::RetryLater
        | ProtocolErrorCode::ShuttingDown => false,
        ProtocolErrorCode::HandshakeTimeout => !sent_auth,
        _ => true,
    }
}

/// Spends one failed handshake of `client`'s budget; the failure that uses up the budget
/// is recorded in the audit log (once per burst).
async fn note_failure(ctx: &GatewayCtx, client: ClientAddr) {
    if ctx.shutdown.is_cancelled() || !ctx.limits.agent_auth.spend(&client.limit_key()) {
        return;
    }
    warn!(%client, "too many failed agent handshakes: refusing this address for a while");
    ctx.store
        .audit(
            format!("client:{client}"),
            AuditAction::AuthFailureBurst,
            format!("client:{client}"),
            json!({"scope": "agent_handshake", "window_s": ctx.limits.agent_window_s}),
        )
        .await;
}

struct Registered {
    verified: Verified,
    session_id: String,
    kick: CancellationToken,
    superseded: CancellationToken,
    epoch: u64,
}

impl Registered {
    fn into_session(
        self,
        conn: Connection,
        client: ClientAddr,
        commands: mpsc::Receiver<Box<Command>>,
    ) -> Authenticated {
        Authenticated {
            conn,
            client,
            agent: self.verified.agent,
            version: self.verified.version,
            agent_version: self.verified.agent_version,
            session_id: self.session_id,
            commands,
            kick: self.kick,
            superseded: self.superseded,
            epoch: self.epoch,
        }
    }
}

/// hello → challenge → auth, then the signature and the agent record are checked;
/// `sent_auth` is set once `auth` has arrived.
async fn exchange(
    conn: &mut Connection,
    ctx: &GatewayCtx,
    sent_auth: &mut bool,
) -> Result<Verified, Refusal> {
    let hello = match conn.recv().await {
        Ok(AgentMessage::Hello(hello)) => hello,
        Ok(_) => {
            return Err(Some(refusal(
                ProtocolErrorCode::MalformedFrame,
                "the first frame must be hello",
            )))
        }
        Err(e) => return Err(e.protocol_error()),
    };
    debug!(agent_id = %hello.agent_id, agent_version = %hello.agent_version, "received hello");
    let version = SUPPORTED_VERSIONS
        .negotiate(hello.versions)
        .ok_or(Some(unsupported(SUPPORTED_VERSIONS)))?;
    let nonce = random_bytes::<NONCE_LEN>();
    let challenge = PlaneMessage::Challenge(Challenge {
        version,
        nonce: STANDARD.encode(nonce),
    });
    conn.send(&challenge).await.map_err(|_| None)?;
    let auth = match conn.recv().await {
        Ok(AgentMessage::Auth(auth)) => auth,
        Ok(_) => {
            return Err(Some(refusal(
                ProtocolErrorCode::MalformedFrame,
                "expected auth after challenge",
            )))
        }
        Err(e) => return Err(e.protocol_error()),
    };
    debug!(agent_id = %hello.agent_id, "received auth");
    *sent_auth = true;
    // In a reconnect storm, storage reads queue here (within the handshake timeout)
    // instead of all hitting the database at once; the socket I/O above is not bounded.
    let _work = ctx.handshake_work.acquire().await.map_err(|_| {
        Some(refusal(
            ProtocolErrorCode::ShuttingDown,
            "the control plane is shutting down",
        ))
    })?;
    let auth_failed = || {
        Some(refusal(
            ProtocolErrorCode::AuthFailed,
            "unknown agent or invalid signature",
        ))
    };
    let agent = match ctx.store.agent(&hello.agent_id).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return Err(auth_failed()),
        Err(e) => {
            tracing::error!("cannot read agent record: {e}");
            let error = refusal(ProtocolErrorCode::RetryLater, "storage unavailable");
            return Err(Some(ProtocolError {
                retry_after_s: Some(30),
                ..error
            }));
        }
    };
    verify_auth(
        &agent.public_key,
        version,
        &hello.agent_id,
        &nonce,
        &auth.signature,
    )
    .map_err(|_| auth_failed())?;
    if agent.revoked {
        return Err(Some(revoked()));
    }
    Ok(Verified {
        agent,
        version,
        agent_version: hello.agent_version,
    })
}

/// Claims the agent's single session slot; re-checks revocation afterwards so a revoke
/// racing with the handshake cannot leave a live session behind.
async fn register(
    verified: Verified,
    ctx: &GatewayCtx,
) -> Result<(Registered, mpsc::Receiver<Box<Command>>), Refusal> {
    let agent_id = verified.agent.agent_id.clone();
    let session_id = random_id("s");
    let kick = CancellationToken::new();
    let superseded = CancellationToken::new();
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let handle = SessionHandle {
        session_id: session_id.clone(),
        commands: tx,
        kick: kick.clone(),
        superseded: superseded.clone(),
        epoch: 0,
        closed: CancellationToken::new(),
    };
    if let Err(Duplicate) = ctx.registry.register(&agent_id, handle) {
        tracing::warn!(agent_id = %agent_id, "refused a second live connection (duplicate_agent)");
        return Err(Some(refusal(
            ProtocolErrorCode::DuplicateAgent,
            "another live connection already uses this agent key",
        )));
    }
    if !matches!(ctx.store.agent(&agent_id).await, Ok(Some(a)) if !a.revoked) {
        ctx.registry.unregister(&agent_id, &session_id);
        return Err(Some(revoked()));
    }
    // This session wins over one on another node (which `leases` there then closes).
    let epoch = match ctx
        .store
        .claim_session(&agent_id, &ctx.node_id, super::leases::SESSION_LEASE)
        .await
    {
        Ok(epoch) => epoch,
        Err(e) => {
            tracing::warn!(agent_id = %agent_id, "cannot record the agent's session: {e}");
            ctx.registry.unregister(&agent_id, &session_id);
            return Err(Some(refusal(
                ProtocolErrorCode::RetryLater,
                "the control plane cannot reach its database; reconnect later",
            )));
        }
    };
    ctx.registry.set_epoch(&agent_id, &session_id, epoch);
    Ok((
        Registered {
            verified,
            session_id,
            kick,
            superseded,
            epoch,
        },
        rx,
    ))
}

/// The `revoked` refusal.
pub fn revoked() -> ProtocolError {
    refusal(
        ProtocolErrorCode::Revoked,
        "this agent was revoked; enroll again with a new token",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_client_did_wrong_spends_its_budget() {
        use ProtocolErrorCode as Code;
        for code in [Code::AuthFailed, Code::MalformedFrame, Code::Revoked] {
            assert!(counts_against_client(code, true), "{code:?}");
        }
        assert!(
            counts_against_client(Code::HandshakeTimeout, false),
            "a silent client"
        );
        assert!(
            !counts_against_client(Code::HandshakeTimeout, true),
            "a slow plane"
        );
        for code in [Code::DuplicateAgent, Code::RetryLater, Code::ShuttingDown] {
            assert!(!counts_against_client(code, false), "{code:?}");
        }
    }
}
