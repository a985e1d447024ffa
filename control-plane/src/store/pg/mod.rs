//! The postgres backend's connection to PostgreSQL (`[store] backend = "postgres"`): a
//! pool of connections (deadpool-postgres over tokio-postgres — async, pipelined, and
//! maintained with the driver; sqlx would add a second TLS and runtime layer for queries
//! we write by hand anyway), TLS through the plane's rustls with the ring provider,
//! verified like libpq's `sslmode=verify-full`, and the schema's migrations
//! (`migrations`).

pub mod copy;
pub mod listen;
pub mod lock;
pub mod migrations;
mod store;

pub use store::{channel, ForeignResult, PgStore};

use crate::config::{PgTls, StoreConfig};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;

/// Why PostgreSQL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The configuration is unusable (URL, CA file).
    #[error("{0}")]
    Config(String),
    /// The database refused or failed a statement, or could not be reached.
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool.
    #[error("postgres: no connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The database's schema is newer than this binary, or a migration differs from the
    /// one applied under its version.
    #[error("{0}")]
    Schema(String),
}

/// A pool of connections to the database `config` names (connections open lazily; see
/// [`connect`] to try one now).
pub fn pool(config: &StoreConfig) -> Result<Pool, PgError> {
    let url = config
        .database_url()
        .map_err(|e| PgError::Config(e.to_string()))?;
    let pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| PgError::Config(format!("store.url: {e}")))?;
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match config.tls {
        PgTls::Disable => Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
        PgTls::VerifyFull => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(config)?);
            Manager::from_config(pg, tls, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(config.pool_size)
        .build()
        .map_err(|e| PgError::Config(format!("store: {e}")))
}

/// A pool with one connection made now, so a wrong URL, password or certificate is
/// reported at once rather than at the first request.
pub async fn connect(config: &StoreConfig) -> Result<Pool, PgError> {
    let pool = pool(config)?;
    drop(pool.get().await?);
    Ok(pool)
}

/// rustls for PostgreSQL: the server's certificate must chain to the system's roots or
/// `ca_file` and name the URL's host.
pub(crate) fn client_tls(config: &StoreConfig) -> Result<rustls::ClientConfig, PgError> {
    let roots = crate::tls::client_roots(config.ca_file.as_deref())
        .map_err(|e| PgError::Config(format!("store.{e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}
