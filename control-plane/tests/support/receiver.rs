//! A webhook receiver on 127.0.0.1:0 that records every delivery and answers with a
//! scripted status (200 by default).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap().to_string()
    }
}

#[derive(Default)]
struct Script {
    /// Statuses to answer, in order; 200 once empty (or `fallback`).
    statuses: VecDeque<u16>,
    fallback: Option<u16>,
    got: Vec<Received>,
}

/// A real HTTP receiver on 127.0.0.1:0.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    /// A receiver record for `url`, where nothing is served (a peer that never answers).
    pub fn unserved(url: String) -> Self {
        Receiver {
            url,
            script: Arc::default(),
        }
    }

    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, script }
    }

    /// Answers these statuses first.
    pub fn answer(&self, statuses: &[u16]) {
        self.script.lock().unwrap().statuses.extend(statuses);
    }

    /// Answers `status` to everything from now on (`None`: 200).
    pub fn always(&self, status: Option<u16>) {
        self.script.lock().unwrap().fallback = status;
    }

    /// Every request received so far (answered 2xx or not).
    pub fn got(&self) -> Vec<Received> {
        self.script.lock().unwrap().got.clone()
    }

    /// The allocations the received `event_type` events are about, sorted (an id twice
    /// when the event came twice).
    pub fn allocation_ids(&self, event_type: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .of(event_type)
            .iter()
            .map(|r| {
                r.json()["object"]["allocation_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        ids.sort();
        ids
    }

    /// The received requests of `event_type`.
    pub fn of(&self, event_type: &str) -> Vec<Received> {
        self.got()
            .into_iter()
            .filter(|r| r.event_type() == event_type)
            .collect()
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut script = script.lock().unwrap();
    script.got.push(Received {
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    let status = script
        .statuses
        .pop_front()
        .or(script.fallback)
        .unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}
