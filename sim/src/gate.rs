//! What nginx in front of ProxySmart does to every request: faults first (a broken box is
//! broken for everyone), then HTTP Basic auth on `/apix/*`, `/crud/*`, `/modem/*`, counting
//! authenticated calls per path. `/_sim/` passes straight through.

use super::faults::{self, Fault};
use super::shared::Sim;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

const PROTECTED: [&str; 4] = ["/apix/", "/crud/", "/modem/", "/conf/"];
/// Query parameters that name what a call acts on, in the order they are looked for.
const TARGETS: [&str; 4] = ["arg", "IMEI", "NICK", "PORTID"];

pub(crate) async fn gate(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    // The rotation link is a bearer secret: it works without auth.
    let protected =
        PROTECTED.iter().any(|p| path.starts_with(p)) && path != "/apix/reset_ip_secure";
    let authed = authorized(&sim, req.headers());
    let fault = {
        let mut state = sim.state();
        if protected && authed {
            state.count_call(&path, &target(req.uri().query().unwrap_or_default()));
        }
        let fault = state.fault;
        if let Fault::FailNext(n) = fault {
            state.fault = if n <= 1 {
                Fault::None
            } else {
                Fault::FailNext(n - 1)
            };
        }
        fault
    };
    if let Some(resp) = apply_fault(&sim, fault).await {
        return resp;
    }
    if protected && !authed {
        tracing::debug!(%path, "simulator: rejected API call without valid credentials");
        return unauthorized();
    }
    next.run(req).await
}

/// Returns the fault's reply, or `None` to carry on (possibly after a delay).
async fn apply_fault(sim: &Sim, fault: Fault) -> Option<Response> {
    match fault {
        Fault::None => None,
        Fault::Latency(delay) => {
            tokio::select! {
                _ = tokio::time::sleep(delay) => None,
                _ = sim.shutdown.cancelled() => Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
            }
        }
        Fault::Status500 | Fault::FailNext(_) => {
            Some(html(StatusCode::INTERNAL_SERVER_ERROR, faults::PAGE_500))
        }
        Fault::Html => Some(html(StatusCode::OK, faults::PAGE_MAINTENANCE)),
        Fault::Garbage => Some(html(StatusCode::OK, faults::GARBAGE)),
        Fault::Hang => {
            sim.shutdown.cancelled().await;
            Some(StatusCode::SERVICE_UNAVAILABLE.into_response())
        }
        // Only reached by an API call on a connection opened for `/_sim/` (keep-alive);
        // fresh API connections were already dropped by the accept loop.
        Fault::Refuse => Some(html(StatusCode::BAD_GATEWAY, faults::PAGE_500)),
    }
}

/// The IMEI, NICK or port id a query names ("" for none).
fn target(query: &str) -> String {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), super::util::percent_decode(v)))
        .collect();
    TARGETS
        .iter()
        .find_map(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        .unwrap_or_default()
}

fn authorized(sim: &Sim, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(decoded) = super::util::basic_credentials(value) else {
        return false;
    };
    let expected = format!("{}:{}", sim.config.username, sim.config.password);
    constant_time_eq(&decoded, expected.as_bytes())
}

/// Compares without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

fn unauthorized() -> Response {
    let mut resp = html(StatusCode::UNAUTHORIZED, faults::PAGE_401);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"ProxySmart\""),
    );
    resp
}

/// A reply with ProxySmart's content type (`text/html`, also for JSON).
pub(crate) fn html(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(body.into())
        .unwrap_or_else(|_| status.into_response())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"proxy:proxy", b"proxy:proxy"));
        assert!(!constant_time_eq(b"proxy:proxy", b"proxy:proxz"));
        assert!(!constant_time_eq(b"proxy:prox", b"proxy:proxy"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
