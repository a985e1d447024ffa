//! A webhook receiver for the end-to-end tests: a real HTTP endpoint on 127.0.0.1:0 that
//! records every delivery (body and signature) and answers the status a test sets, and the
//! signature check a marketplace would run.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it, with the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    /// The status the receiver answered.
    pub answered: u16,
    /// The `Farmhand-Signature` header.
    pub signature: String,
    /// The body as sent.
    pub body: String,
}

impl Received {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What a receiver got; its answer can be changed at any time.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The status answered to every request.
    pub status: AtomicU16,
    got: Mutex<Vec<Received>>,
}

impl Inbox {
    /// The deliveries of events of `event_type`, oldest first.
    pub fn of(&self, event_type: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.json()["type"] == json!(event_type))
            .cloned()
            .collect()
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let answered = inbox.status.load(Ordering::SeqCst);
    let signature = headers
        .get("farmhand-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_default();
    inbox
        .got
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            answered,
            signature,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A webhook receiver on 127.0.0.1:0 answering 200 (until told otherwise) until `stop`:
/// its URL (`…/hooks`) and its inbox.
pub async fn start_receiver(stop: &CancellationToken) -> anyhow::Result<(String, Arc<Inbox>)> {
    let inbox = Arc::new(Inbox::default());
    inbox.status.store(200, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(inbox.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok((url, inbox))
}

/// HMAC-SHA256(secret, "<t>.<body>") as the receiver checks it, `t` within 5 minutes.
pub fn verifies(received: &Received, secret: &str) -> bool {
    let Some((t, v1)) = received
        .signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{t}.{}", received.body).as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let Ok(t_s) = t.parse::<i64>() else {
        return false;
    };
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - t_s;
    hex == v1 && age.abs() <= 300
}
