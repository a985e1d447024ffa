//! The serving lock: until agent sessions, cross-node commands and sweeps are shared
//! between nodes, one node at a time serves a database. It holds a session-level advisory
//! lock on a connection of its own for as long as it serves; a second node refuses to
//! start. A lost connection (a database restart) loses the lock with it: the holder takes
//! it again on a new connection as soon as the database answers, and stops serving if
//! another node took it meanwhile, so two nodes never serve one database at once.

use super::PgError;
use deadpool_postgres::{ClientWrapper, Object, Pool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The advisory lock key ("farmserv" in ASCII); migrations use another.
const SERVING: i64 = 0x6661_726d_7365_7276;
/// How often the holder checks that its connection (and so the lock) is alive.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The lock, held until dropped (or lost: then `lost` is cancelled).
#[derive(Debug)]
pub struct ServingLock {
    /// Cancelled when another node took the lock after this one lost it.
    pub lost: CancellationToken,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for ServingLock {
    fn drop(&mut self) {
        // The connection goes with the task, and the lock with the connection.
        self.watch.abort();
    }
}

/// Takes the serving lock of the database behind `pool`, or says which node holds it.
pub async fn take(pool: &Pool) -> Result<ServingLock, PgError> {
    let client = try_take(pool).await?.ok_or_else(|| {
        PgError::Serving(
            "another control-plane node serves this database: this release serves one \
             database from one node at a time (stop the other, or give this one its own \
             database)"
                .into(),
        )
    })?;
    let lost = CancellationToken::new();
    let watch = tokio::spawn(watch(pool.clone(), client, lost.clone()));
    Ok(ServingLock { lost, watch })
}

/// A connection out of the pool holding the lock, or `None` when another one holds it.
async fn try_take(pool: &Pool) -> Result<Option<ClientWrapper>, PgError> {
    let client = Object::take(pool.get().await?);
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVING])
        .await?
        .get(0);
    Ok(taken.then_some(client))
}

/// Keeps the lock: checks the connection, and on losing it takes the lock again.
async fn watch(pool: Pool, mut client: ClientWrapper, lost: CancellationToken) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if client.simple_query("SELECT 1").await.is_ok() {
            continue;
        }
        warn!("lost the connection that holds the serving lock: taking it again");
        loop {
            match try_take(&pool).await {
                Ok(Some(again)) => {
                    info!("serving lock taken again");
                    client = again;
                    break;
                }
                Ok(None) => {
                    error!(
                        "another node took the serving lock while the database was away: stopping"
                    );
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    warn!("cannot take the serving lock again yet: {e}");
                    tokio::time::sleep(CHECK_EVERY).await;
                }
            }
        }
    }
}
