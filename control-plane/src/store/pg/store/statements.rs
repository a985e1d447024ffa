//! Statements prepared once per connection: every query of `PgStore` runs through these,
//! so a statement costs one round trip to the server, not two (a text query is parsed and
//! described before it runs), and the server plans it once per connection. The SQL given
//! must be fixed text (constants formatted in are fine): it is the cache's key.

use deadpool_postgres::GenericClient;
use std::future::Future;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

/// Parameters of a statement, as the driver takes them.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The driver's query methods over the connection's statement cache.
pub(crate) trait Cached: GenericClient {
    /// `query`, prepared once.
    fn cached_query<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query(&statement, params).await
        }
    }

    /// `query_opt`, prepared once.
    fn cached_query_opt<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_opt(&statement, params).await
        }
    }

    /// `query_one`, prepared once.
    fn cached_query_one<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_one(&statement, params).await
        }
    }

    /// `execute`, prepared once.
    fn cached_execute<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.execute(&statement, params).await
        }
    }
}

impl<C: GenericClient> Cached for C {}
