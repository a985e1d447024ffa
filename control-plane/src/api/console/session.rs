//! Console sign-in: an API key, typed once, exchanged for a session cookie
//! (`farmhand_console`: HttpOnly, SameSite=Strict, `Secure` under TLS, path `/console`,
//! expiring after [`SESSION_TTL`], or when the key expires if sooner) so the key never sits
//! in the browser. Sessions live in memory (a restart signs everyone out; a cluster behind
//! a load balancer needs sticky sessions for the console), at most [`MAX_SESSIONS`] and
//! [`MAX_PER_KEY`] per key (the oldest goes), each with at most [`MAX_STREAMS`] live
//! streams; each request re-checks that the key still exists: a revoked key ends its
//! sessions.

use crate::api::auth::Caller;
use crate::store::Role;
use axum::http::header::COOKIE;
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The cookie's name.
pub const COOKIE_NAME: &str = "farmhand_console";
/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at once (only a valid key makes one).
const MAX_SESSIONS: usize = 1024;
/// Sessions one key holds at once (its oldest goes): one key cannot push out the others'.
const MAX_PER_KEY: usize = 16;
/// Live streams one session holds at once (open tabs).
const MAX_STREAMS: usize = 4;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in.
    pub caller: Caller,
    /// When the session ends.
    pub expires: Instant,
    /// What the session's pages send with an action (`actions`): a page of another site
    /// cannot know it.
    pub csrf: String,
}

impl Session {
    /// Whether admin pages are open to it.
    pub fn is_admin(&self) -> bool {
        self.caller.role == Role::Admin
    }
}

/// Every open session, by cookie value, and its open streams.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    streams: Mutex<HashMap<String, usize>>,
}

/// One open live stream of a session; closing it (drop) frees its place.
#[derive(Debug)]
pub struct StreamSlot {
    sessions: std::sync::Arc<Sessions>,
    id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .sessions
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = streams.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.id);
            }
        }
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session for `caller`, ending at the latest when its key does (`key_left`:
    /// the key's remaining life, if it expires); returns the cookie value.
    pub fn open(&self, caller: Caller, key_left: Option<Duration>) -> String {
        let id = crate::ids::random_id("cs");
        let now = Instant::now();
        let ttl = key_left.map_or(SESSION_TTL, |left| left.min(SESSION_TTL));
        let mut open = self.lock();
        open.retain(|_, s| s.expires > now);
        let oldest_of = |open: &HashMap<String, Session>, same_key: bool| {
            open.iter()
                .filter(|(_, s)| !same_key || s.caller.key_id == caller.key_id)
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        };
        let of_key = open
            .values()
            .filter(|s| s.caller.key_id == caller.key_id)
            .count();
        let evict = if of_key >= MAX_PER_KEY {
            oldest_of(&open, true)
        } else if open.len() >= MAX_SESSIONS {
            oldest_of(&open, false)
        } else {
            None
        };
        if let Some(oldest) = evict {
            open.remove(&oldest);
        }
        open.insert(
            id.clone(),
            Session {
                caller,
                expires: now + ttl,
                csrf: crate::ids::random_id("ct"),
            },
        );
        id
    }

    /// A place for one more live stream of session `id`; `None` when it has its fill.
    pub fn stream(self: &std::sync::Arc<Self>, id: &str) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let n = streams.entry(id.to_string()).or_default();
        if *n >= MAX_STREAMS {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            sessions: self.clone(),
            id: id.to_string(),
        })
    }

    /// The live session the request's cookie names.
    pub fn of(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers)?;
        let mut open = self.lock();
        match open.get(&id) {
            Some(s) if s.expires > Instant::now() => Some((id, s.clone())),
            Some(_) => {
                open.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Whether session `id` is still open.
    pub fn is_open(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|s| s.expires > Instant::now())
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The `Set-Cookie` value of a new session (`secure` under TLS).
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            role: Role::Marketplace,
            name: "shop".into(),
            key_id: Some("k1".into()),
            tenant: Some("t".into()),
            seller: None,
        }
    }

    #[test]
    fn a_cookie_finds_its_session_and_nothing_else() {
        let sessions = std::sync::Arc::new(Sessions::default());
        let id = sessions.open(caller(), None);
        let slots: Vec<_> = (0..MAX_STREAMS)
            .map_while(|_| sessions.stream(&id))
            .collect();
        assert_eq!(slots.len(), MAX_STREAMS);
        assert!(
            sessions.stream(&id).is_none(),
            "a session's streams are bounded"
        );
        drop(slots);
        assert!(sessions.stream(&id).is_some());
        let mut headers = HeaderMap::new();
        let value = format!("other=1; {COOKIE_NAME}={id}");
        headers.insert(COOKIE, value.parse().unwrap());
        let (found, session) = sessions.of(&headers).unwrap();
        assert_eq!(found, id);
        assert!(!session.is_admin());
        sessions.close(&id);
        assert!(sessions.of(&headers).is_none());
        // One key's sessions are bounded: its own oldest goes, not another key's.
        let two = Caller {
            key_id: Some("k2".into()),
            ..caller()
        };
        let other = sessions.open(two, None);
        let first = sessions.open(caller(), None);
        for _ in 0..MAX_PER_KEY {
            sessions.open(caller(), None);
        }
        assert!(sessions.is_open(&other));
        assert!(!sessions.is_open(&first));
        let short = sessions.open(caller(), Some(Duration::ZERO));
        assert!(!sessions.is_open(&short), "a session ends with its key");
        headers.insert(COOKIE, format!("{COOKIE_NAME}=x;y").parse().unwrap());
        assert!(sessions.of(&headers).is_none());
        let set = set_cookie(&id, true);
        for flag in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/console",
            "Max-Age=28800",
        ] {
            assert!(set.contains(flag), "{set}");
        }
        assert!(!set_cookie(&id, false).contains("Secure"));
    }
}
