//! Whole-database reads on PostgreSQL, for the privacy tests (`docs/privacy.md`): which
//! tables exist, and which hold a given piece of data.

use super::statements::Cached;
use super::{db, PgStore};
use crate::store::StoreError;

impl PgStore {
    /// The tables of the plane's schema, by name.
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        self.client()
            .await?
            .cached_query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                 ORDER BY table_name",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.try_get(0).map_err(db))
            .collect()
    }

    /// The tables with `needle` in a row's text (every column; binary ones in hex).
    /// Reads every row.
    pub async fn tables_containing(&self, needle: &[u8]) -> Result<Vec<String>, StoreError> {
        let needle = String::from_utf8_lossy(needle).into_owned();
        let client = self.client().await?;
        let mut found = Vec::new();
        for table in self.table_names().await? {
            // The name comes from the catalogue, not from a caller.
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM \"{table}\" r WHERE position($1 in r::text) > 0)"
            );
            let any: bool = client
                .cached_query_one(&sql, &[&needle])
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(db)?;
            if any {
                found.push(table);
            }
        }
        Ok(found)
    }
}
