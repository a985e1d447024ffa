//! The local admin socket, `<data_dir>/admin.sock` (0600): the running plane serves its
//! REST API there to whoever can open the file — the operator on the host, as the plane's
//! user or root — as an admin without a key. It is how the CLI manages keys while the plane
//! runs (sled locks the database, so the CLI cannot open it then): `keys create` goes
//! offline to the database when the plane is stopped and through this socket when it runs.

use crate::api::auth::LocalOperator;
use axum::Router;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixListener;

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "admin.sock";
/// How long the CLI waits for the plane's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the local admin socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalAdminError {
    /// The socket could not be created.
    #[error("cannot create the local admin socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The plane could not be reached or did not answer.
    #[error("cannot reach the running control plane at {path}: {message}")]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The plane answered with an error.
    #[error("the control plane refused: {status} {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its JSON error body.
        body: String,
    },
}

/// The socket path in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Binds the socket (replacing a stale file a crashed plane left; the database lock
/// already proved no other plane runs on this directory) and makes it 0600.
pub fn bind(data_dir: &Path) -> Result<UnixListener, LocalAdminError> {
    let path = socket_path(data_dir);
    let fail = |source| LocalAdminError::Bind {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let listener = UnixListener::bind(&path).map_err(fail)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}

/// `app` as the local operator sees it: every request is the admin.
pub fn app(app: Router) -> Router {
    app.layer(axum::Extension(LocalOperator))
}

/// Sends one request to the plane running on `data_dir`; the JSON answer of a 2xx.
pub async fn call(
    data_dir: &Path,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, LocalAdminError> {
    let socket = socket_path(data_dir);
    let unreachable = |message: String| LocalAdminError::Unreachable {
        path: socket.clone(),
        message,
    };
    // Plain HTTP on the socket: the provider only satisfies reqwest's TLS setup.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .unix_socket(socket.clone())
        .timeout(CLIENT_TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = client.request(method, format!("http://plane{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| {
        unreachable(format!(
            "{e} (is the plane running, and may this user open the socket?)"
        ))
    })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(LocalAdminError::Refused {
            status: status.as_u16(),
            body: text,
        });
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| unreachable(format!("not JSON ({e})")))
}
