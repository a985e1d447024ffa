//! The plane's open-file limit. Every connection is a descriptor, so the soft limit (1024 on
//! most systems outside the packaged unit) must exceed `[http] max_connections` plus the
//! agents' sessions, or `accept` fails before the connection caps can answer and agents are
//! locked out. Like Go's runtime and nginx, the plane raises its soft limit to the hard limit
//! at start; it cannot raise the hard one, so a limit still too low is logged.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force
/// (`None` when unlimited or unknown).
pub fn raise() -> Option<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let soft = super::raise();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        assert_eq!(soft, hard);
    }
}
