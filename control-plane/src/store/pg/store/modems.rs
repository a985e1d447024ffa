//! The modems agents report, with each one's capacity, on PostgreSQL: what the schema's
//! capacity trigger counts allocations against, so no two nodes sell past it.

use super::statements::Cached;
use super::{db, PgStore};
use crate::store::StoreError;
use serde_json::Value;

const UPSERT: &str = "INSERT INTO modems (agent_id, imei, capacity, view, updated_at)
     VALUES ($1, $2, $3, $4, now())
     ON CONFLICT (agent_id, imei) DO UPDATE SET
       capacity = EXCLUDED.capacity, view = EXCLUDED.view, updated_at = now()";

impl PgStore {
    /// Makes the rows of `agent_id`'s modems what it reports now: `(IMEI, capacity,
    /// view)` each; a modem it no longer reports goes. One transaction.
    pub async fn record_modems(
        &self,
        agent_id: &str,
        modems: &[(String, u32, Value)],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let imeis: Vec<&str> = modems.iter().map(|(imei, _, _)| imei.as_str()).collect();
        tx.cached_execute(
            "DELETE FROM modems WHERE agent_id = $1 AND NOT (imei = ANY($2))",
            &[&agent_id, &imeis],
        )
        .await
        .map_err(db)?;
        let upsert = tx.prepare(UPSERT).await.map_err(db)?;
        for (imei, capacity, view) in modems {
            let capacity = i32::try_from(*capacity).unwrap_or(i32::MAX);
            tx.execute(&upsert, &[&agent_id, imei, &capacity, view])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// Records that `agent_id` reports `imei` able to hold `capacity` allocations, with
    /// the view the fleet shows of it.
    pub async fn put_modem(
        &self,
        agent_id: &str,
        imei: &str,
        capacity: u32,
        view: &Value,
    ) -> Result<(), StoreError> {
        let capacity = i32::try_from(capacity).unwrap_or(i32::MAX);
        self.client()
            .await?
            .cached_execute(UPSERT, &[&agent_id, &imei, &capacity, view])
            .await
            .map_err(db)?;
        Ok(())
    }
}
