//! Probe records and quality hours on PostgreSQL (`store::probes`): a probe record is
//! written only while its allocation keeps its detail, and goes with the allocation
//! (foreign key); quality hours are added to in place (every node adds its own counts) and
//! go with their agent.

use super::statements::Cached;
use super::{db, from_json, to_json, PgStore};
use crate::store::{AgentHour, ProbeTrack, QualityHour, StoreError, LATENCY_BUCKETS};

const QUALITY_COLUMNS: &str = "agent_id, hour, probes, probes_ok, latency, rotations, \
    rotations_changed, rotations_timed, rotation_ms_total, replacements";

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn small(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn hour_of(row: &tokio_postgres::Row) -> Result<AgentHour, StoreError> {
    let n = |name: &str| -> Result<u64, StoreError> { Ok(small(row.try_get(name).map_err(db)?)) };
    let stored: Vec<i64> = row.try_get("latency").map_err(db)?;
    let mut latency = [0; LATENCY_BUCKETS];
    for (slot, count) in latency.iter_mut().zip(stored) {
        *slot = small(count);
    }
    let counts = QualityHour {
        probes: n("probes")?,
        probes_ok: n("probes_ok")?,
        latency,
        rotations: n("rotations")?,
        rotations_changed: n("rotations_changed")?,
        rotations_timed: n("rotations_timed")?,
        rotation_ms_total: n("rotation_ms_total")?,
        replacements: n("replacements")?,
    };
    Ok((
        row.try_get("agent_id").map_err(db)?,
        row.try_get("hour").map_err(db)?,
        counts,
    ))
}

impl PgStore {
    /// Writes `allocation_id`'s probe record; false (nothing written) when the allocation
    /// is gone or its detail was purged.
    pub async fn save_probe_track(
        &self,
        allocation_id: &str,
        track: &ProbeTrack,
    ) -> Result<bool, StoreError> {
        let written = self
            .client()
            .await?
            .cached_execute(
                "INSERT INTO probe_tracks (allocation_id, agent_id, track)
                 SELECT $1, $2, $3 FROM allocations
                 WHERE allocation_id = $1
                   AND NOT coalesce((record->>'detail_purged')::boolean, false)
                 FOR SHARE
                 ON CONFLICT (allocation_id) DO UPDATE SET
                   agent_id = EXCLUDED.agent_id, track = EXCLUDED.track",
                &[&allocation_id, &track.agent_id, &to_json(track)?],
            )
            .await
            .map_err(db)?;
        Ok(written > 0)
    }

    /// `allocation_id`'s probe record, if it was probed.
    pub async fn probe_track(&self, allocation_id: &str) -> Result<Option<ProbeTrack>, StoreError> {
        self.client()
            .await?
            .cached_query_opt(
                "SELECT track FROM probe_tracks WHERE allocation_id = $1",
                &[&allocation_id],
            )
            .await
            .map_err(db)?
            .map(|row| from_json(row.try_get("track").map_err(db)?))
            .transpose()
    }

    /// The probe records of those of `allocation_ids` that have one, in one statement.
    pub async fn probe_tracks(
        &self,
        allocation_ids: &[String],
    ) -> Result<std::collections::HashMap<String, ProbeTrack>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT allocation_id, track FROM probe_tracks WHERE allocation_id = ANY($1)",
                &[&allocation_ids],
            )
            .await
            .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                let track = from_json(row.try_get("track").map_err(db)?)?;
                Ok((row.try_get("allocation_id").map_err(db)?, track))
            })
            .collect()
    }

    /// The probe records describing `agent_id`'s ports.
    pub(super) async fn probe_tracks_of(
        &self,
        agent_id: &str,
    ) -> Result<Vec<(String, ProbeTrack)>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT allocation_id, track FROM probe_tracks WHERE agent_id = $1
                 ORDER BY allocation_id",
                &[&agent_id],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("allocation_id").map_err(db)?;
                Ok((id, from_json(row.try_get("track").map_err(db)?)?))
            })
            .collect()
    }

    /// Adds each `(agent, hour, counts)` to what is kept for that hour, in one
    /// transaction, in (agent, hour) order (two nodes adding to the same hours wait for each
    /// other, never deadlock); an agent no longer enrolled gets nothing. Returns how many
    /// hours were written.
    pub async fn add_quality(&self, hours: &[AgentHour]) -> Result<usize, StoreError> {
        let mut sorted: Vec<&AgentHour> = hours.iter().collect();
        sorted.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut written = 0;
        for (agent_id, hour, c) in sorted {
            let latency: Vec<i64> = c.latency.iter().map(|n| big(*n)).collect();
            written += tx
                .cached_execute(
                    &format!(
                        "INSERT INTO agent_quality ({QUALITY_COLUMNS})
                         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM agents
                         WHERE agent_id = $1
                         ON CONFLICT (agent_id, hour) DO UPDATE SET
                           probes = agent_quality.probes + EXCLUDED.probes,
                           probes_ok = agent_quality.probes_ok + EXCLUDED.probes_ok,
                           latency = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0)
                             FROM unnest(agent_quality.latency, EXCLUDED.latency)
                               WITH ORDINALITY AS t(a, b, i) ORDER BY i),
                           rotations = agent_quality.rotations + EXCLUDED.rotations,
                           rotations_changed =
                             agent_quality.rotations_changed + EXCLUDED.rotations_changed,
                           rotations_timed =
                             agent_quality.rotations_timed + EXCLUDED.rotations_timed,
                           rotation_ms_total =
                             agent_quality.rotation_ms_total + EXCLUDED.rotation_ms_total,
                           replacements = agent_quality.replacements + EXCLUDED.replacements"
                    ),
                    &[
                        agent_id,
                        hour,
                        &big(c.probes),
                        &big(c.probes_ok),
                        &latency,
                        &big(c.rotations),
                        &big(c.rotations_changed),
                        &big(c.rotations_timed),
                        &big(c.rotation_ms_total),
                        &big(c.replacements),
                    ],
                )
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(usize::try_from(written).unwrap_or(usize::MAX))
    }

    /// The hours from `from_hour` on of `agents` (every agent when `None`).
    pub async fn quality_hours(
        &self,
        agents: Option<&[String]>,
        from_hour: i64,
    ) -> Result<Vec<AgentHour>, StoreError> {
        let client = self.client().await?;
        let rows = match agents {
            None => {
                client
                    .cached_query(
                        &format!("SELECT {QUALITY_COLUMNS} FROM agent_quality WHERE hour >= $1"),
                        &[&from_hour],
                    )
                    .await
            }
            Some(ids) => {
                client
                    .cached_query(
                        &format!(
                            "SELECT {QUALITY_COLUMNS} FROM agent_quality
                             WHERE agent_id = ANY($1) AND hour >= $2"
                        ),
                        &[&ids, &from_hour],
                    )
                    .await
            }
        }
        .map_err(db)?;
        rows.iter().map(hour_of).collect()
    }

    /// Deletes the hours before `before_hour`; returns how many.
    pub async fn prune_quality(&self, before_hour: i64) -> Result<usize, StoreError> {
        let deleted = self
            .client()
            .await?
            .cached_execute("DELETE FROM agent_quality WHERE hour < $1", &[&before_hour])
            .await
            .map_err(db)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// Every hour kept of `agent_id` (seller export).
    pub(super) async fn quality_of(&self, agent_id: &str) -> Result<Vec<AgentHour>, StoreError> {
        self.quality_hours(Some(&[agent_id.to_string()]), i64::MIN)
            .await
    }
}
