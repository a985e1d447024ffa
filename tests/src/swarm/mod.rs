//! `farmhand-swarm`'s engine: many simulated agents in one process, each a real enrolled
//! WebSocket client speaking the real protocol (one task per agent), plus a REST load
//! driver and a churn driver. The `farmhand-swarm` binary and the CI smoke test
//! (`tests/swarm_smoke.rs`) use it.

mod agent;
mod answer;
mod churn;
mod enroll;
mod fleet;
mod load;
mod stats;

pub use agent::MAX_BACKOFF;
pub use answer::imei;
pub use churn::{churn, ChurnReport};
pub use enroll::{enroll_all, Identity};
pub use fleet::Fleet;
pub use load::{drive, LoadPlan, LoadReport};
pub use stats::Summary;

use crate::harness::Api;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running swarm. Dropping it stops every agent.
#[derive(Debug)]
pub struct Swarm {
    /// Shared settings and counters.
    pub fleet: Arc<Fleet>,
    agents: usize,
    kicks: Vec<Arc<agent::Kick>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Swarm {
    /// Spawns one task per identity; they connect at once and keep reconnecting.
    pub fn start(identities: Vec<Identity>, fleet: Arc<Fleet>) -> Swarm {
        let stop = CancellationToken::new();
        let agents = identities.len();
        let mut tasks = JoinSet::new();
        let mut kicks = Vec::with_capacity(agents);
        for me in identities {
            let kick = Arc::new(agent::Kick::default());
            kicks.push(kick.clone());
            tasks.spawn(agent::run(me, fleet.clone(), stop.child_token(), kick));
        }
        Swarm {
            fleet,
            agents,
            kicks,
            stop,
            tasks,
        }
    }

    /// Number of agents.
    pub fn agents(&self) -> usize {
        self.agents
    }

    /// Waits (up to `limit`) until `pred(online)` holds; returns how long it took.
    pub async fn wait_online(
        &self,
        limit: Duration,
        pred: impl Fn(usize) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while !pred(self.fleet.online()) {
            if self.fleet.hit_emfile() {
                anyhow::bail!(
                    "too many open files (EMFILE) with {} of {} agents online: raise the limit \
                     (`ulimit -n`) for the swarm and the plane",
                    self.fleet.online(),
                    self.agents
                );
            }
            if started.elapsed() > limit {
                anyhow::bail!(
                    "{} of {} agents online after {limit:?}; last error: {}",
                    self.fleet.online(),
                    self.agents,
                    self.fleet.last_error().unwrap_or_else(|| "none".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    }

    /// Stops every agent and waits for their tasks.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls `GET /v1/modems?online=true` (with `admin`) every `every` until it lists at least
/// `want` modems or `limit` passes; returns how long it took.
pub async fn wait_modems(
    admin: &Api,
    want: usize,
    every: Duration,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let seen = count_modems(admin).await.unwrap_or(0);
        if seen >= want {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            anyhow::bail!("the plane lists {seen} of {want} modems online after {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}

async fn count_modems(admin: &Api) -> anyhow::Result<usize> {
    let reply = admin.get("/v1/modems?online=true").await?;
    Ok(reply
        .body
        .pointer("/modems")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len))
}
