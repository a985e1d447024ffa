//! Strict extractors: request bodies and query strings that do not parse — malformed JSON,
//! wrong types, unknown fields — become 422 `invalid_request` in the API's error shape
//! (never axum's plain-text rejections); bodies over `max_body_bytes` become 413, and a
//! body that does not arrive within `[http] body_timeout_s` 408 `request_timeout`.

use super::AppState;
use crate::http_error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A JSON body parsed strictly.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        // Reading stops at the limit, so a body without Content-Length cannot grow past it,
        // and at the deadline, so a slow one cannot hold the connection.
        let deadline = state.config.http.body_timeout();
        let bytes = tokio::time::timeout(deadline, axum::body::to_bytes(req.into_body(), limit))
            .await
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        deadline.as_secs()
                    ),
                )
            })?
            .map_err(|_| ApiError::too_large(limit))?;
        match serde_json::from_slice(&bytes) {
            Ok(body) => Ok(ApiJson(body)),
            // JSON has one number type: `60.0` is the integer 60 to any JSON Schema reader
            // (and to our OpenAPI document), so it is taken as one. Only a failed parse pays.
            Err(e) if e.is_data() => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .map(integral_floats_as_integers)
                .and_then(|v| serde_json::from_value(v).ok())
                .map(ApiJson)
                .ok_or_else(|| ApiError::invalid(format!("invalid JSON body: {e}"))),
            Err(e) => Err(ApiError::invalid(format!("invalid JSON body: {e}"))),
        }
    }
}

/// `value` with every number that has no fractional part written as an integer.
fn integral_floats_as_integers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Exactly representable integers only (|f| < 2^53).
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                Value::from(f as i64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(integral_floats_as_integers).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_floats_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// A query string parsed strictly.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(ApiError::invalid(format!(
                "invalid query string: {}",
                e.body_text()
            ))),
        }
    }
}

/// One path parameter.
#[derive(Debug)]
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(e) => Err(ApiError::invalid(format!(
                "invalid path: {}",
                e.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_floats_become_integers_and_others_stay() {
        let value = json!({"a": 60.0, "b": [1.5, 2.0, -3.0], "c": {"d": 1e300}, "e": "60.0"});
        let fixed = integral_floats_as_integers(value);
        assert_eq!(
            fixed,
            json!({"a": 60, "b": [1.5, 2, -3], "c": {"d": 1e300}, "e": "60.0"})
        );
        assert!(fixed["a"].is_u64());
    }
}
