//! Group commit: one thread (`farmhand-flush`) makes sled's log durable for everyone who
//! asked since its last flush, so N concurrent writers pay for one `flush` instead of N,
//! and no tokio worker thread sits in an fsync.
//!
//! A caller writes first, then asks: it takes a ticket (a counter) and waits until a flush
//! that *started after* its ticket was issued has finished — that flush covers its write.
//! Async callers ([`GroupCommit::wait`]) wait on a oneshot and block nothing. Blocking
//! callers ([`GroupCommit::wait_blocking`]) wait on a condvar; on a multi-threaded tokio
//! runtime that happens inside `block_in_place`, so the worker's other tasks move to
//! another thread meanwhile.
//!
//! Flushes start at least [`FLUSH_SPACING`] apart: under load, back-to-back flushes would
//! each cost sled a log-buffer write and a wake-up of its whole I/O thread pool, so the
//! flusher lets tickets gather for the rest of that interval instead (a writer that comes
//! when no flush started for that long waits for its own flush only). That bounds flushes
//! to 250 a second and adds at most 4 ms to a durable write (sled's I/O threads were a
//! third of the plane's CPU with 2 ms; 4 ms gave ~10 % more allocations a second).
//!
//! A failed flush fails every ticket it was meant to cover; later tickets get a new try.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The shortest time between the starts of two flushes.
const FLUSH_SPACING: Duration = Duration::from_millis(4);

#[derive(Debug, Default)]
struct State {
    /// The last ticket handed out.
    issued: u64,
    /// Every ticket up to this one has been through a flush (successful or not).
    handled: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// The last failed flush: tickets up to `.0` above `durable` get its error.
    failed: Option<(u64, sled::Error)>,
    /// Async waiters, by ticket.
    waiters: Vec<(u64, oneshot::Sender<Result<(), sled::Error>>)>,
    /// The store is closing: flush what was asked, then stop.
    stop: bool,
    /// Flushes done (for tests).
    flushes: u64,
}

impl State {
    /// The outcome for `ticket`, once it has one.
    fn outcome(&self, ticket: u64) -> Option<Result<(), sled::Error>> {
        if self.durable >= ticket {
            return Some(Ok(()));
        }
        match &self.failed {
            Some((upto, e)) if *upto >= ticket => Some(Err(e.clone())),
            _ if self.handled >= ticket => Some(Ok(())),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher (a ticket was issued, or stop).
    asked: Condvar,
    /// Wakes blocking waiters (a flush finished).
    flushed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The group-commit flusher of one database; dropping it flushes what was asked and stops
/// the thread (which releases its database handle).
#[derive(Debug)]
pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread for `db`.
    pub(super) fn start(db: sled::Db) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("farmhand-flush".into())
            .spawn(move || run(&worker, &db))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    fn ticket(&self) -> u64 {
        let mut state = self.shared.lock();
        state.issued += 1;
        self.shared.asked.notify_one();
        state.issued
    }

    /// Waits until every write made before this call is durable.
    pub(super) async fn wait(&self) -> Result<(), sled::Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            state.issued += 1;
            let ticket = state.issued;
            state.waiters.push((ticket, tx));
            self.shared.asked.notify_one();
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Like [`GroupCommit::wait`], blocking the calling thread.
    pub(super) fn wait_blocking(&self) -> Result<(), sled::Error> {
        let ticket = self.ticket();
        outside_runtime(|| {
            let mut state = self.shared.lock();
            loop {
                if let Some(outcome) = state.outcome(ticket) {
                    return outcome;
                }
                state = self
                    .shared
                    .flushed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        })
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.asked.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flusher: waits for tickets, lets more gather until [`FLUSH_SPACING`] after the last
/// flush started, flushes once for all of them, reports, repeats.
fn run(shared: &Shared, db: &sled::Db) {
    let mut last_start: Option<Instant> = None;
    loop {
        {
            let mut state = shared.lock();
            while state.issued == state.handled && !state.stop {
                state = shared
                    .asked
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.issued == state.handled {
                return; // stopping, nothing left to flush
            }
        }
        if let Some(due) = last_start.map(|at| at + FLUSH_SPACING) {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let upto = shared.lock().issued;
        last_start = Some(Instant::now());
        let result = db.flush().map(drop);
        let mut state = shared.lock();
        state.flushes += 1;
        state.handled = upto;
        match &result {
            Ok(()) => state.durable = upto,
            Err(e) => state.failed = Some((upto, e.clone())),
        }
        let (ready, waiting) = std::mem::take(&mut state.waiters)
            .into_iter()
            .partition(|(ticket, _)| *ticket <= upto);
        state.waiters = waiting;
        drop(state);
        shared.flushed.notify_all();
        for (_, tx) in ready {
            let _ = tx.send(result.clone());
        }
    }
}

fn stopped() -> sled::Error {
    sled::Error::Io(std::io::Error::other("the store is closing"))
}

/// Runs `f`, which blocks, without stalling a multi-threaded tokio runtime's worker (its
/// other tasks move to another thread meanwhile). On a current-thread runtime, or outside
/// any runtime, it just blocks, as any synchronous call would.
fn outside_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_share_flushes_and_every_write_survives() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path())
                .flush_every_ms(None)
                .open()
                .unwrap();
            let commit = Arc::new(GroupCommit::start(db.clone()).unwrap());
            let threads: Vec<_> = (0..8u32)
                .map(|t| {
                    let (db, commit) = (db.clone(), commit.clone());
                    std::thread::spawn(move || {
                        for i in 0..50u32 {
                            db.insert(format!("{t}-{i}"), &i.to_be_bytes()[..]).unwrap();
                            commit.wait_blocking().unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let state = commit.shared.lock();
            assert_eq!(state.issued, 400);
            assert_eq!(state.durable, 400);
            assert!(
                state.flushes < 400,
                "writers shared flushes: {}",
                state.flushes
            );
        }
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(db.len(), 400);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_and_blocking_waiters_on_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let commit = Arc::new(GroupCommit::start(db.clone()).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64u32 {
            let (db, commit) = (db.clone(), commit.clone());
            tasks.spawn(async move {
                db.insert(i.to_be_bytes(), &[1u8][..]).unwrap();
                if i % 2 == 0 {
                    commit.wait().await
                } else {
                    commit.wait_blocking()
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(commit.shared.lock().durable, 64);
    }

    #[test]
    fn a_failed_flush_fails_its_tickets_only() {
        let mut state = State {
            issued: 5,
            handled: 3,
            durable: 2,
            failed: Some((3, stopped())),
            ..State::default()
        };
        assert!(state.outcome(2).unwrap().is_ok());
        assert!(state.outcome(3).unwrap().is_err());
        assert!(state.outcome(4).is_none(), "still waiting");
        state.handled = 5;
        state.durable = 5;
        assert!(state.outcome(3).unwrap().is_ok(), "a later flush covers it");
    }
}
