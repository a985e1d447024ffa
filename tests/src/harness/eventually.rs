//! Waiting without sleeping blindly: poll a condition until it holds or a deadline passes.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] re-checks its condition.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Some`, or fails with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
