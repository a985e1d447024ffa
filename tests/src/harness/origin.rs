//! A local HTTP origin server: the "website" a buyer fetches through the proxy.

use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// A running origin server that answers every `GET /` with a fixed body.
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    body: String,
    _stop: tokio_util::sync::DropGuard,
}

impl Origin {
    /// Starts an origin on 127.0.0.1:0 that serves `body`.
    pub async fn start(body: &str) -> anyhow::Result<Origin> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let served = body.to_owned();
        let app = Router::new().route("/", get(move || async move { served }));
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(Origin {
            addr,
            body: body.to_owned(),
            _stop: stop.drop_guard(),
        })
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The body it serves.
    pub fn body(&self) -> &str {
        &self.body
    }
}
