//! The one rate-limiter module: every abuse limit of the control plane lives here.
//!
//! - [`Limiter`] — a failure (or attempt) budget per key: at most `max` events per
//!   `window_s`, as a token bucket (capacity `max`, refilled continuously), so a key that
//!   stops misbehaving recovers gradually instead of at a cliff. Used for failed REST
//!   authentications per client address, failed agent handshakes per client address and
//!   enrollment attempts per token.
//! - [`Limits`] — the bundle the API and the gateway share, built once from
//!   [`ServerConfig`], plus the bound on unauthenticated (mid-handshake) agent connections.
//! - [`ClientAddr`] — the client address a request came from: the TCP peer. No
//!   `X-Forwarded-For` is trusted, so behind a reverse proxy every client shares the
//!   proxy's budget (see `docs/security.md`).

use crate::clock::Clock;
use crate::config::{RateLimit, ServerConfig};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Keys tracked per limiter before full (idle) buckets are dropped, so an attacker cycling
/// addresses cannot grow the table without bound.
const MAX_TRACKED_KEYS: usize = 10_000;

/// A key is over its budget; try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Time until one more event is allowed (at least one second, for `Retry-After`).
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds, rounded up, never 0 (HTTP `Retry-After`, protocol `retry_after_s`).
    pub fn retry_after_s(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 || secs == 0 {
            secs + 1
        } else {
            secs
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// An event budget per key (see the module docs).
#[derive(Debug)]
pub struct Limiter<K> {
    capacity: f64,
    per_token: Duration,
    buckets: Mutex<HashMap<K, Bucket>>,
    clock: Clock,
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    /// At most `limit.max` events per `limit.window_s` seconds per key, refilled as
    /// `clock` moves.
    pub fn new(limit: RateLimit, clock: Clock) -> Self {
        let max = limit.max.max(1);
        Limiter {
            capacity: f64::from(max),
            per_token: Duration::from_secs(limit.window_s.max(1)) / max,
            buckets: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Bucket>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bucket of `key` refilled up to `now`.
    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let earned = now.duration_since(bucket.at).as_secs_f64() / self.per_token.as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + earned).min(self.capacity),
            at: now,
        }
    }

    fn limited(&self, tokens: f64) -> Limited {
        let missing = (1.0 - tokens).max(0.0);
        Limited {
            retry_after: self.per_token.mul_f64(missing),
        }
    }

    /// Whether `key` may act now (does not spend anything).
    pub fn check(&self, key: &K) -> Result<(), Limited> {
        self.check_at(key, self.clock.instant())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Limited> {
        match self.lock().get(key) {
            Some(b) => {
                let b = self.refilled(*b, now);
                if b.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.limited(b.tokens))
                }
            }
            None => Ok(()),
        }
    }

    /// Spends one event of `key`'s budget. Returns `true` when this event used the last
    /// of it — the start of a burst, which callers record once in the audit log.
    pub fn spend(&self, key: &K) -> bool {
        self.spend_at(key, self.clock.instant())
    }

    fn spend_at(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.lock();
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            self.evict(&mut buckets, now);
        }
        let fresh = Bucket {
            tokens: self.capacity,
            at: now,
        };
        let bucket = buckets.entry(key.clone()).or_insert(fresh);
        let mut b = self.refilled(*bucket, now);
        let had_budget = b.tokens >= 1.0;
        b.tokens = (b.tokens - 1.0).max(0.0);
        *bucket = b;
        had_budget && b.tokens < 1.0
    }

    /// Makes room for one more key: drops the buckets that refilled completely (they hold
    /// no information), else the fullest one (the key that misbehaved least).
    fn evict(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let capacity = self.capacity;
        buckets.retain(|_, b| self.refilled(*b, now).tokens < capacity);
        if buckets.len() < MAX_TRACKED_KEYS {
            return;
        }
        let fullest = buckets
            .iter()
            .max_by(|a, b| {
                let (ta, tb) = (self.refilled(*a.1, now), self.refilled(*b.1, now));
                ta.tokens.total_cmp(&tb.tokens)
            })
            .map(|(k, _)| k.clone());
        if let Some(key) = fullest {
            buckets.remove(&key);
        }
    }

    /// Spends one event if the budget allows it; otherwise says how long to wait.
    pub fn try_spend(&self, key: &K) -> Result<(), Limited> {
        self.check(key)?;
        self.spend(key);
        Ok(())
    }
}

/// Every limit the API and the gateway enforce, built once from the configuration.
#[derive(Debug)]
pub struct Limits {
    /// Failed REST authentications (401) per client address.
    pub rest_auth: Limiter<IpAddr>,
    /// Failed agent handshakes per client address.
    pub agent_auth: Limiter<IpAddr>,
    /// Enrollment attempts per token (keyed by the token's SHA-256).
    pub enroll: Limiter<Vec<u8>>,
    /// Window of the REST limit, for the audit record of a burst.
    pub rest_window_s: u64,
    /// Window of the agent limit, for the audit record of a burst.
    pub agent_window_s: u64,
    handshakes: Arc<Semaphore>,
}

impl Limits {
    /// The limits `config` names, on `clock`.
    pub fn new(config: &ServerConfig, clock: Clock) -> Self {
        Limits {
            rest_auth: Limiter::new(config.rest_auth_failure_limit, clock.clone()),
            agent_auth: Limiter::new(config.agent_auth_failure_limit, clock.clone()),
            enroll: Limiter::new(config.enroll_attempt_limit, clock),
            rest_window_s: config.rest_auth_failure_limit.window_s,
            agent_window_s: config.agent_auth_failure_limit.window_s,
            handshakes: Arc::new(Semaphore::new(config.max_pending_handshakes)),
        }
    }

    /// A slot for one unauthenticated agent connection, held until its handshake ends;
    /// `None` when `max_pending_handshakes` connections are already mid-handshake.
    pub fn handshake_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
    }
}

/// The address a request came from: the TCP peer's IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ClientAddr {
    /// The key this client's budget is kept under: its IPv4 address, or its IPv6 /64
    /// (one subscriber usually owns a whole /64, so per-address limits would be moot).
    pub fn limit_key(&self) -> IpAddr {
        match self.0 {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        }
    }

    /// The peer recorded by the server (`ConnectInfo`). A server built without connect
    /// info (a test router) yields 0.0.0.0: every client then shares one budget, which
    /// errs on the side of limiting.
    pub fn of(parts: &Parts) -> Self {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        ClientAddr(ip)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientAddr::of(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, window_s: u64) -> Limiter<&'static str> {
        Limiter::new(RateLimit { max, window_s }, Clock::system())
    }

    #[test]
    fn a_budget_runs_out_reports_the_burst_once_and_refills() {
        let l = limiter(3, 3600);
        assert!(l.check(&"a").is_ok());
        assert!(!l.spend(&"a"));
        assert!(!l.spend(&"a"));
        assert!(l.spend(&"a"), "the third failure starts the burst");
        let limited = l.check(&"a").unwrap_err();
        assert!(limited.retry_after_s() > 1000 && limited.retry_after_s() <= 1200);
        assert!(!l.spend(&"a"), "a burst is reported once");
        assert!(l.check(&"b").is_ok(), "keys are independent");
        assert!(l.try_spend(&"b").is_ok());
    }

    #[test]
    fn a_short_window_recovers() {
        let l = limiter(2, 10);
        let start = Instant::now();
        l.spend_at(&"a", start);
        l.spend_at(&"a", start);
        let limited = l.check_at(&"a", start).unwrap_err();
        assert_eq!(limited.retry_after_s(), 5);
        assert!(l.check_at(&"a", start + Duration::from_secs(4)).is_err());
        assert!(l.check_at(&"a", start + Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientAddr(a).limit_key(), ClientAddr(b).limit_key());
        assert_ne!(ClientAddr(a).limit_key(), ClientAddr(c).limit_key());
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(ClientAddr(v4).limit_key(), v4);
    }

    #[test]
    fn the_table_is_bounded() {
        let l: Limiter<u32> = Limiter::new(
            RateLimit {
                max: 5,
                window_s: 1,
            },
            Clock::system(),
        );
        for key in 0..(MAX_TRACKED_KEYS as u32 + 10) {
            l.spend(&key);
        }
        assert!(l.lock().len() <= MAX_TRACKED_KEYS);
    }
}
