//! The plane's time: one [`Clock`] handed to every part that decides by it — allocation
//! lifetimes and the expiry sweeper, `allocation.expiring` warnings, outage grace,
//! rotation cooldowns, release retries, credential retention and rate limits. In service
//! it is the system's (wall time for what is stored and shown, the monotonic clock for
//! durations); tests use a manual one and move it ([`Clock::advance`]), so an hour-long
//! grace period is crossed in a millisecond and a boundary is checked to the second.
//!
//! Transport timing (heartbeats, HTTP and command timeouts) stays on tokio's clock: it is
//! about real peers, not business rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::watch;

/// The clock; cheap to clone (clones share a manual clock's time).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    wall: OffsetDateTime,
    mono: Instant,
    /// How far the clock was moved from where it started; sleepers watch it.
    moved: watch::Sender<Duration>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that starts at the system's present and moves only by [`Clock::advance`].
    pub fn manual() -> Self {
        let manual = Manual {
            wall: OffsetDateTime::now_utc(),
            mono: Instant::now(),
            moved: watch::Sender::new(Duration::ZERO),
        };
        Clock {
            manual: Some(Arc::new(manual)),
        }
    }

    /// The wall time.
    pub fn now(&self) -> OffsetDateTime {
        match &self.manual {
            None => OffsetDateTime::now_utc(),
            Some(m) => m.wall + *m.moved.borrow(),
        }
    }

    /// The monotonic time (durations that a wall-clock step must not stretch).
    pub fn instant(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.mono + *m.moved.borrow(),
        }
    }

    /// Moves a manual clock forward by `by` and wakes whoever sleeps on it; a system clock
    /// cannot be moved (returns false).
    pub fn advance(&self, by: Duration) -> bool {
        let Some(m) = &self.manual else {
            return false;
        };
        m.moved.send_modify(|moved| *moved += by);
        true
    }

    /// Sleeps until the monotonic time `at`. Sweepers sleep until an absolute time they
    /// computed from the same reading they scanned with, so a move of a manual clock
    /// during a scan is never lost.
    pub async fn sleep_until(&self, at: Instant) {
        match &self.manual {
            None => tokio::time::sleep_until(at.into()).await,
            Some(m) => m.wait(|| self.instant() >= at).await,
        }
    }

    /// Sleeps until the wall time `at`.
    pub async fn sleep_until_time(&self, at: OffsetDateTime) {
        match &self.manual {
            None => {
                let left = Duration::try_from(at - self.now()).unwrap_or_default();
                tokio::time::sleep(left).await;
            }
            Some(m) => m.wait(|| self.now() >= at).await,
        }
    }
}

impl Manual {
    /// Returns once `done` holds, re-checking whenever the clock moves.
    async fn wait(&self, done: impl Fn() -> bool) {
        // A sleep that is already over still yields, so a sweeper whose next deadline is
        // now cannot spin without letting other tasks run.
        tokio::task::yield_now().await;
        // Subscribed before the first check: a move between the check and the wait is seen.
        let mut moved = self.moved.subscribe();
        while !done() {
            if moved.changed().await.is_err() {
                // The clock is gone: nothing will ever wake this sleeper.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A sweeper's progress: the clock time its last finished scan looked at, and how many
/// items scans found due. A test that moves a manual clock waits until a scan has seen
/// the new time, then knows exactly what was found — no waiting for a non-event.
#[derive(Debug, Default)]
pub struct Sweeps {
    scanned_to_ms: AtomicU64,
    found: AtomicU64,
}

impl Sweeps {
    /// The clock time (Unix ms) the last finished scan looked at: once it is at or past a
    /// time, everything due by then has been found.
    pub fn scanned_to_ms(&self) -> u64 {
        self.scanned_to_ms.load(Ordering::SeqCst)
    }

    /// Items scans found due (one may be counted by more than one scan until the work it
    /// needs has started; the work is done once).
    pub fn found(&self) -> u64 {
        self.found.load(Ordering::SeqCst)
    }

    /// A scan at `now` found `due` items.
    pub(crate) fn record(&self, now: OffsetDateTime, due: usize) {
        self.found.fetch_add(due as u64, Ordering::SeqCst);
        let ms = crate::ids::unix_ms(now);
        self.scanned_to_ms.fetch_max(ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_advanced_and_wakes_its_sleepers() {
        let clock = Clock::manual();
        let (wall, mono) = (clock.now(), clock.instant());
        let sleeper = {
            let clock = clock.clone();
            let at = clock.instant() + Duration::from_secs(3600);
            tokio::spawn(async move { clock.sleep_until(at).await })
        };
        clock.advance(Duration::from_secs(3599));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke a second early");
        assert!(clock.advance(Duration::from_secs(1)));
        tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("the sleeper wakes once its hour has passed")
            .expect("no panic");
        assert_eq!(clock.now() - wall, time::Duration::hours(1));
        assert_eq!(clock.instant() - mono, Duration::from_secs(3600));
        assert!(!Clock::system().advance(Duration::from_secs(1)));
    }
}
