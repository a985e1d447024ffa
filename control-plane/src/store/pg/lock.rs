//! The sweeping lock: every node of a cluster serves REST calls and holds agents, but the
//! sweeps over shared state — expiry, expiry warnings, automatic replacement, retention —
//! run on one node at a time, the holder of a session-level advisory lock on a connection
//! of its own, so each item is acted on once. Every other node tries to take it every
//! [`CHECK_EVERY`]: a holder that dies (its connection closes, and the lock with it) or
//! loses the database is replaced within seconds, and a holder that lost its connection
//! stops sweeping at once ([`Sweeping::held`] goes false) until it takes the lock again.
//! (Webhook deliveries are claimed row by row instead: `FOR UPDATE SKIP LOCKED`.)

use super::PgError;
use deadpool_postgres::{ClientWrapper, Object, Pool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The advisory lock key ("farmswep" in ASCII); migrations use another.
const SWEEPING: i64 = 0x6661_726d_7377_6570;
/// How often the holder checks its connection, and the others try to take the lock.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether this node sweeps now; shared by the store's clones.
#[derive(Debug, Default)]
pub struct Sweeping {
    held: AtomicBool,
    gained: Notify,
}

impl Sweeping {
    /// Whether this node holds the sweeping lock now.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Resolves once this node holds the lock.
    pub async fn until_held(&self) {
        loop {
            let gained = self.gained.notified();
            if self.held() {
                return;
            }
            gained.await;
        }
    }

    fn set(&self, held: bool) {
        let was = self.held.swap(held, Ordering::AcqRel);
        if held && !was {
            info!("this node sweeps now (expiry, warnings, replacement, retention)");
            self.gained.notify_waiters();
        } else if was && !held {
            warn!("this node stopped sweeping: it lost the sweeping lock's connection");
        }
    }
}

/// Takes and keeps the sweeping lock for `sweeping` until `shutdown` (the lock goes with
/// the connection when this returns).
pub async fn run(pool: Pool, sweeping: Arc<Sweeping>, shutdown: CancellationToken) {
    let mut holder: Option<ClientWrapper> = None;
    loop {
        holder = match holder {
            Some(client) if client.simple_query("SELECT 1").await.is_ok() => Some(client),
            _ => {
                sweeping.set(false);
                match try_take(&pool).await {
                    Ok(taken) => taken,
                    Err(e) => {
                        warn!("cannot try the sweeping lock: {e}");
                        None
                    }
                }
            }
        };
        sweeping.set(holder.is_some());
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
    sweeping.set(false);
}

/// A connection out of the pool holding the lock, or `None` when another node holds it.
async fn try_take(pool: &Pool) -> Result<Option<ClientWrapper>, PgError> {
    let client = pool.get().await?;
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEPING])
        .await?
        .try_get(0)?;
    // Only a holding connection leaves the pool; a refused try goes back to it.
    Ok(taken.then(|| Object::take(client)))
}
