//! Commands this node sent that still await their result: how many per op and how long
//! the oldest has waited (the console's health page, `farmhand_commands_in_flight`). A
//! dispatch holds a [`Sent`] guard while it waits, so one whose caller went away (the
//! REST client hung up, the future was dropped) stops counting too.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// By the order they were sent: the first entry is the oldest.
    waiting: BTreeMap<u64, (&'static str, Instant)>,
}

/// The commands in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    inner: Mutex<Inner>,
}

/// One command in flight: it stops counting when dropped.
#[derive(Debug)]
pub struct Sent<'a> {
    owner: &'a InFlight,
    seq: u64,
}

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        self.owner.lock().waiting.remove(&self.seq);
    }
}

/// What is in flight now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlightNow {
    /// Count per op, by op name.
    pub by_op: BTreeMap<&'static str, u64>,
    /// How long the oldest has waited (`None`: nothing in flight).
    pub oldest: Option<Duration>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A command of `op` was sent: it counts until the guard is dropped.
    pub fn sent(&self, op: &'static str) -> Sent<'_> {
        let mut inner = self.lock();
        let seq = inner.next;
        inner.next += 1;
        inner.waiting.insert(seq, (op, Instant::now()));
        Sent { owner: self, seq }
    }

    /// What is in flight now.
    pub fn now(&self) -> InFlightNow {
        let inner = self.lock();
        let mut by_op = BTreeMap::new();
        for (op, _) in inner.waiting.values() {
            *by_op.entry(*op).or_insert(0) += 1;
        }
        InFlightNow {
            by_op,
            oldest: inner.waiting.values().next().map(|(_, at)| at.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_counts_until_its_guard_goes() {
        let in_flight = InFlight::default();
        assert_eq!(in_flight.now(), InFlightNow::default());
        let first = in_flight.sent("provision");
        let second = in_flight.sent("provision");
        let third = in_flight.sent("rotate");
        let now = in_flight.now();
        assert_eq!(now.by_op.get("provision"), Some(&2));
        assert_eq!(now.by_op.get("rotate"), Some(&1));
        assert!(now.oldest.is_some());
        drop(second);
        drop(first);
        assert_eq!(in_flight.now().by_op.get("provision"), None);
        drop(third);
        assert_eq!(in_flight.now(), InFlightNow::default());
    }
}
