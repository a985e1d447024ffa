//! The swarm's shared state: settings every agent reads, and counters (agents online,
//! connection errors, refusals by kind, reconnect times after a churn drop, whether the
//! process ran out of file descriptors) the drivers watch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Settings and counters shared by all simulated agents.
#[derive(Debug)]
pub struct Fleet {
    /// The plane's base URLs (`http://…`): one, or every node of a cluster (each agent
    /// connects to one of them, by its id).
    pub urls: Vec<String>,
    /// Modems per agent.
    pub modems: usize,
    /// First two IMEI digits (distinct per run on one plane).
    pub imei_prefix: u8,
    /// How long each agent waits before answering a command.
    pub answer_latency: Duration,
    online: AtomicUsize,
    errors: AtomicUsize,
    emfile: AtomicBool,
    last_error: Mutex<Option<String>>,
    refusals: Mutex<BTreeMap<String, usize>>,
    reconnects: Mutex<Vec<Duration>>,
}

impl Fleet {
    /// A fleet with no agent online yet.
    pub fn new(urls: &[String], modems: usize, imei_prefix: u8, answer_latency: Duration) -> Fleet {
        Fleet {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            modems,
            imei_prefix,
            answer_latency,
            online: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
            emfile: AtomicBool::new(false),
            last_error: Mutex::new(None),
            refusals: Mutex::new(BTreeMap::new()),
            reconnects: Mutex::new(Vec::new()),
        }
    }

    /// The node `agent_id` connects to on its `attempt`-th try (`agent::run` counts from 0
    /// and moves on by one after every session or failed try): the agents are spread
    /// evenly over the nodes at first, and one whose session ended tries the next node (as
    /// an agent given several URLs does), so with several URLs a churned agent comes back
    /// on another node.
    pub fn url_for(&self, agent_id: &str, attempt: u32) -> &str {
        let n = agent_id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let n = n.wrapping_add(attempt as usize);
        self.urls
            .get(n % self.urls.len().max(1))
            .map_or("", String::as_str)
    }

    /// Agents that are welcomed and have sent their inventory.
    pub fn online(&self) -> usize {
        self.online.load(Ordering::SeqCst)
    }

    /// Connection attempts that failed with an error (not counting clean closes).
    pub fn errors(&self) -> usize {
        self.errors.load(Ordering::SeqCst)
    }

    /// Whether any connection failed with EMFILE (too many open files).
    pub fn hit_emfile(&self) -> bool {
        self.emfile.load(Ordering::SeqCst)
    }

    /// The most recent connection error, for diagnostics.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Refusals so far by kind (`retry_later`, `http 503`, `duplicate_agent`…): the plane
    /// said no, as opposed to a broken connection.
    pub fn refusals(&self) -> BTreeMap<String, usize> {
        self.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Counts one refusal of `kind`.
    pub fn note_refusal(&self, kind: &str) {
        if let Ok(mut refusals) = self.refusals.lock() {
            *refusals.entry(kind.to_owned()).or_default() += 1;
        }
    }

    /// Records how long an agent dropped by churn took to be welcomed again (from its first
    /// reconnection attempt, retries included).
    pub fn note_reconnect(&self, took: Duration) {
        if let Ok(mut samples) = self.reconnects.lock() {
            samples.push(took);
        }
    }

    /// Takes the reconnect times recorded so far.
    pub fn take_reconnects(&self) -> Vec<Duration> {
        self.reconnects
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// Records a failed connection attempt.
    pub fn note_error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        if is_emfile(e) {
            self.emfile.store(true, Ordering::SeqCst);
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(format!("{e:#}"));
        }
    }
}

/// EMFILE (24) anywhere in the error chain, as io::Error or inside a tungstenite error.
fn is_emfile(e: &anyhow::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    e.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            match cause.downcast_ref::<WsError>() {
                Some(WsError::Io(io)) => Some(io),
                _ => None,
            }
        });
        io.and_then(std::io::Error::raw_os_error) == Some(24)
    })
}

/// Counts an agent online for as long as it lives (the session's welcomed part).
#[derive(Debug)]
pub struct Online<'a>(&'a Fleet);

impl<'a> Online<'a> {
    /// Marks one more agent online.
    pub fn new(fleet: &'a Fleet) -> Online<'a> {
        fleet.online.fetch_add(1, Ordering::SeqCst);
        Online(fleet)
    }
}

impl Drop for Online<'_> {
    fn drop(&mut self) {
        self.0.online.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emfile_is_recognised_through_context() {
        let fleet = Fleet::new(&["http://x".to_owned()], 1, 35, Duration::ZERO);
        let other =
            anyhow::Error::new(std::io::Error::from_raw_os_error(111)).context("connecting");
        fleet.note_error(&other);
        assert!(!fleet.hit_emfile());
        let emfile =
            anyhow::Error::new(std::io::Error::from_raw_os_error(24)).context("connecting");
        fleet.note_error(&emfile);
        assert!(fleet.hit_emfile());
        assert_eq!(fleet.errors(), 2);
    }

    #[test]
    fn online_guard_counts_up_and_down() {
        let fleet = Fleet::new(&["http://x".to_owned()], 1, 35, Duration::ZERO);
        {
            let _a = Online::new(&fleet);
            let _b = Online::new(&fleet);
            assert_eq!(fleet.online(), 2);
        }
        assert_eq!(fleet.online(), 0);
    }
}
