//! The modems agents report, with each one's capacity, on PostgreSQL: what the schema's
//! capacity trigger counts allocations against, so no two nodes sell past it.

use super::{db, PgStore};
use crate::store::StoreError;
use serde_json::Value;

impl PgStore {
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
            .execute(
                "INSERT INTO modems (agent_id, imei, capacity, view, updated_at)
                 VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (agent_id, imei) DO UPDATE SET
                   capacity = EXCLUDED.capacity, view = EXCLUDED.view, updated_at = now()",
                &[&agent_id, &imei, &capacity, view],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}
