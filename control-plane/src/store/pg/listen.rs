//! Listening for the cluster's notifications (`store` names the channels): one connection
//! of its own, outside the pool, that sends `LISTEN` and hands every notification to a
//! channel. A lost connection is made again (with a pause between tries); each new one
//! starts with a [`Notification::Resync`], because notifications sent meanwhile are lost
//! and the listener must read the rows instead.

use super::{client_tls, PgError};
use crate::config::{PgTls, StoreConfig};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Connection};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a listener waits before connecting again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// What a listener hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A (new) connection listens: read the rows, notifications may have been missed.
    Resync,
    /// `payload` on `channel`.
    Message {
        /// The channel.
        channel: String,
        /// What it carried.
        payload: String,
    },
}

/// Listens on `channels` of the database `config` names until `shutdown`.
pub fn spawn(
    config: StoreConfig,
    channels: &'static [&'static str],
    shutdown: CancellationToken,
) -> mpsc::UnboundedReceiver<Notification> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let listened = tokio::select! {
                () = shutdown.cancelled() => return,
                listened = listen_once(&config, channels, &tx) => listened,
            };
            if let Err(e) = listened {
                warn!("the cluster's notifications cannot be received: {e}");
            }
            if tx.is_closed() {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
        }
    });
    rx
}

/// One connection's life: connect, listen, forward until it drops.
async fn listen_once(
    config: &StoreConfig,
    channels: &[&str],
    tx: &mpsc::UnboundedSender<Notification>,
) -> Result<(), PgError> {
    let url = config
        .database_url()
        .map_err(|e| PgError::Config(e.to_string()))?;
    let pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| PgError::Config(format!("store.url: {e}")))?;
    match config.tls {
        PgTls::Disable => {
            let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
            forward(client, connection, channels, tx).await
        }
        PgTls::VerifyFull => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(config)?);
            let (client, connection) = pg.connect(tls).await?;
            forward(client, connection, channels, tx).await
        }
    }
}

async fn forward<S, T>(
    client: Client,
    mut connection: Connection<S, T>,
    channels: &[&str],
    tx: &mpsc::UnboundedSender<Notification>,
) -> Result<(), PgError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let listen: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
    // The connection is polled here, so the client's `LISTEN` runs alongside.
    let mut subscribed = Box::pin(client.batch_execute(&listen));
    let mut ready = false;
    loop {
        tokio::select! {
            done = &mut subscribed, if !ready => {
                done?;
                ready = true;
                debug!("listening for the cluster's notifications");
                if tx.send(Notification::Resync).is_err() {
                    return Ok(());
                }
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let message = Notification::Message {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    };
                    if tx.send(message).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}
