//! The `[store]` section: which storage backend holds the plane's state. `sled` (the
//! default) is an embedded database in `data_dir`: one node, nothing to run beside it.
//! `postgres` is a PostgreSQL database several nodes can share (docs/operations.md);
//! `url` (or `url_file`, or `FARMHAND_STORE_URL`) names it, TLS to it is verified against
//! the system roots or `ca_file` unless `tls = "disable"` (loopback and tests).

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// Default number of connections each node keeps to PostgreSQL.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The embedded sled database in `data_dir` (one node).
    #[default]
    Sled,
    /// A PostgreSQL database (one or more nodes).
    Postgres,
}

/// TLS to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgTls {
    /// TLS required; the server's certificate must chain to a trusted root (`ca_file`, or
    /// the system's) and name the host of `url` (libpq's `sslmode=verify-full`).
    #[default]
    VerifyFull,
    /// No TLS (a database on loopback or a private socket only).
    Disable,
}

/// The `[store]` section (see the module docs).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` or `postgres`.
    pub backend: Backend,
    /// `postgres://user:password@host:port/database` (postgres only; a secret: never
    /// logged).
    pub url: Option<String>,
    /// A file holding the URL on its first line, instead of `url`.
    pub url_file: Option<PathBuf>,
    /// Connections each node keeps.
    pub pool_size: usize,
    /// `verify-full` or `disable`.
    pub tls: PgTls,
    /// PEM file of the CAs PostgreSQL's certificate may chain to (default: system roots).
    pub ca_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sled,
            url: None,
            url_file: None,
            pool_size: DEFAULT_POOL_SIZE,
            tls: PgTls::VerifyFull,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_file", &self.url_file)
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl StoreConfig {
    /// The database at `url`, over `tls`, the rest as default (`store copy`'s target, and
    /// the test suites' throw-away clusters).
    pub fn postgres(url: impl Into<String>, tls: PgTls) -> Self {
        StoreConfig {
            backend: Backend::Postgres,
            url: Some(url.into()),
            tls,
            ..StoreConfig::default()
        }
    }

    /// The database URL: `url`, or the first line of `url_file`.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let Some(path) = &self.url_file else {
            return Err(ConfigError::Invalid(
                "store.url or store.url_file is required with backend = \"postgres\"".into(),
            ));
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let url = text.lines().next().unwrap_or("").trim().to_string();
        if url.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "store.url_file {} is empty",
                path.display()
            )));
        }
        Ok(url)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.pool_size == 0 || self.pool_size > 1024 {
            return invalid("store.pool_size must be 1–1024");
        }
        if self.url.is_some() && self.url_file.is_some() {
            return invalid("store.url and store.url_file are exclusive");
        }
        match self.backend {
            Backend::Sled if self.url.is_some() || self.url_file.is_some() => invalid(
                "store.url is set but store.backend is \"sled\": set backend = \"postgres\"",
            ),
            Backend::Postgres if self.url.is_none() && self.url_file.is_none() => {
                invalid("store.url or store.url_file is required with backend = \"postgres\"")
            }
            Backend::Postgres => {
                let url = self.url.as_deref().unwrap_or("postgres://");
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return invalid("store.url must start with postgres:// or postgresql://");
                }
                Ok(())
            }
            Backend::Sled => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_required_checked_and_never_printed() {
        let pg = |url: Option<&str>| StoreConfig {
            backend: Backend::Postgres,
            url: url.map(str::to_string),
            ..StoreConfig::default()
        };
        StoreConfig::default().validate().unwrap();
        assert!(pg(None)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("store.url"));
        assert!(pg(Some("mysql://x")).validate().is_err());
        let good = pg(Some("postgres://farmhand:s3cret-pw@db:5432/farmhand"));
        good.validate().unwrap();
        assert!(!format!("{good:?}").contains("s3cret-pw"));
        let stray = StoreConfig {
            url: Some("postgres://x".into()),
            ..StoreConfig::default()
        };
        assert!(stray.validate().unwrap_err().to_string().contains("sled"));
    }

    #[test]
    fn the_url_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "postgres://u:p@h/d\nignored\n").unwrap();
        let c = StoreConfig {
            backend: Backend::Postgres,
            url_file: Some(file),
            ..StoreConfig::default()
        };
        c.validate().unwrap();
        assert_eq!(c.database_url().unwrap(), "postgres://u:p@h/d");
    }
}
