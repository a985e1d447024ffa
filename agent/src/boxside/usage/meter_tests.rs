//! The meter's arithmetic, and its totals across counter resets and journal reopens (an
//! agent restart on the same state directory).

use super::*;
use crate::boxside::proxysmart::counters::{IN_KEY, OUT_KEY};

fn read(bytes_in: u64, bytes_out: u64) -> PortCounters {
    PortCounters {
        bytes_in: Some(bytes_in),
        bytes_out: Some(bytes_out),
    }
}

fn totals(state: &MeterState) -> (u64, u64) {
    (state.total_in(), state.total_out())
}

#[test]
fn readings_grow_the_totals_and_a_reset_adds_the_new_reading() {
    let mut s = MeterState::new("al", "p1", 0);
    advance(&mut s, "p1", read(1_000, 100), 1);
    advance(&mut s, "p1", read(5_000, 300), 2);
    assert_eq!(totals(&s), (5_000, 300));
    // Midnight: the counters restart; 200 bytes came in since.
    advance(&mut s, "p1", read(200, 0), 3);
    assert_eq!(totals(&s), (5_200, 300));
    advance(&mut s, "p1", read(700, 50), 4);
    assert_eq!(totals(&s), (5_700, 350));
    // A reset to exactly zero (the number 0 around the nightly reset).
    advance(&mut s, "p1", read(0, 0), 5);
    assert_eq!(totals(&s), (5_700, 350));
    advance(&mut s, "p1", read(10, 10), 6);
    assert_eq!(totals(&s), (5_710, 360));
}

#[test]
fn a_missing_value_changes_nothing_in_its_direction() {
    let mut s = MeterState::new("al", "p1", 0);
    advance(&mut s, "p1", read(1_000, 100), 1);
    advance(
        &mut s,
        "p1",
        PortCounters {
            bytes_in: None,
            bytes_out: Some(150),
        },
        2,
    );
    assert_eq!(totals(&s), (1_000, 150));
    // null is not a reset: the next reading continues from 1,000.
    advance(&mut s, "p1", read(1_200, 150), 3);
    assert_eq!(totals(&s), (1_200, 150));
}

#[test]
fn a_new_port_starts_a_new_counter() {
    let mut s = MeterState::new("al", "p1", 0);
    advance(&mut s, "p1", read(9_000, 900), 1);
    // Re-created (repair or move): the new port's counter starts at zero but may already
    // be past the old reading; both are kept.
    advance(&mut s, "p2", read(20_000, 10), 2);
    assert_eq!(totals(&s), (29_000, 910));
    assert_eq!(s.port_id, "p2");
}

#[test]
fn totals_never_decrease_whatever_the_readings() {
    let mut s = MeterState::new("al", "p1", 0);
    let mut previous = (0, 0);
    for (i, r) in [5, 3, 3, 9, 0, 1, 100, 2, 2, 50].into_iter().enumerate() {
        let port = if i == 6 { "p2" } else { "p1" };
        advance(&mut s, port, read(r, r / 2), i as u64);
        let now = totals(&s);
        assert!(
            now.0 >= previous.0 && now.1 >= previous.1,
            "{now:?} < {previous:?}"
        );
        previous = now;
    }
}

fn managed(allocation_id: &str, port_id: &str) -> ManagedPort {
    ManagedPort {
        allocation_id: allocation_id.into(),
        imei: "356000000000001".into(),
        port_id: port_id.into(),
        http_port: 8001,
        socks_port: 8002,
    }
}

fn readings(list: &[(&str, u64, u64)]) -> HashMap<String, PortCounters> {
    list.iter()
        .map(|(port, i, o)| (port.to_string(), read(*i, *o)))
        .collect()
}

fn entry(report: &UsageReport, allocation_id: &str) -> (u64, u64) {
    let a = report
        .allocations
        .iter()
        .find(|a| a.allocation_id == allocation_id)
        .unwrap_or_else(|| panic!("no {allocation_id} in {report:?}"));
    (a.bytes_in, a.bytes_out)
}

#[tokio::test]
async fn totals_survive_a_counter_reset_and_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [managed("al-a", "pa"), managed("al-b", "pb")];
    {
        let meter = Meter::new(Journal::open(dir.path()).unwrap());
        let r = meter
            .apply(
                &ports,
                &readings(&[("pa", 4_000, 400), ("pb", 10, 1)]),
                1_000,
            )
            .await
            .unwrap();
        assert_eq!(r.measured_at_ms, 1_000);
        assert_eq!(entry(&r, "al-a"), (4_000, 400));
        // The box's counters reset (midnight): the new reading adds up.
        let r = meter
            .apply(&ports, &readings(&[("pa", 500, 20), ("pb", 30, 3)]), 2_000)
            .await
            .unwrap();
        assert_eq!(entry(&r, "al-a"), (4_500, 420));
        assert_eq!(entry(&r, "al-b"), (30, 3));
    } // The agent stops: the journal is closed.
    let meter = Meter::new(Journal::open(dir.path()).unwrap());
    // After the restart the box has counted on; nothing is lost or counted twice.
    let r = meter
        .apply(&ports, &readings(&[("pa", 800, 20)]), 3_000)
        .await
        .unwrap();
    assert_eq!(entry(&r, "al-a"), (4_800, 420));
    assert_eq!(
        entry(&r, "al-b"),
        (30, 3),
        "unread this round: stored totals"
    );
    // And the box restarted too: a reset after the agent's restart is still a reset.
    let r = meter
        .apply(&ports, &readings(&[("pa", 100, 0)]), 4_000)
        .await
        .unwrap();
    assert_eq!(entry(&r, "al-a"), (4_900, 420));
}

#[tokio::test]
async fn states_of_gone_allocations_are_pruned_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let meter = Meter::new(journal.clone());
    meter
        .apply(&[managed("al-a", "pa")], &readings(&[("pa", 7, 7)]), 1_000)
        .await
        .unwrap();
    // The port went (released, or lost until a repair): the state is kept for a while…
    let r = meter.apply(&[], &HashMap::new(), 2_000).await.unwrap();
    assert!(r.allocations.is_empty());
    assert_eq!(journal.meter_states().unwrap().len(), 1);
    // …so a re-created port continues from the old totals.
    let r = meter
        .apply(
            &[managed("al-a", "pa2")],
            &readings(&[("pa2", 3, 0)]),
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(entry(&r, "al-a"), (10, 7));
    meter
        .apply(&[], &HashMap::new(), 3_000 + STATE_RETENTION_MS + 1)
        .await
        .unwrap();
    assert!(journal.meter_states().unwrap().is_empty());
}

fn bad(value: &str) -> Vec<(&'static str, BadCounter)> {
    vec![(
        IN_KEY,
        BadCounter {
            shown: value.into(),
        },
    )]
}

#[test]
fn an_unreadable_counter_is_logged_when_it_breaks_and_when_it_recovers_not_every_round() {
    let mut counters = UnreadableCounters::default();
    let mut changes = Vec::new();
    // Readable from the start: nothing to say.
    changes.extend(counters.observe("pa", &[]));
    // Ten rounds of garbage (even different garbage): one warning.
    for i in 0..10 {
        changes.extend(counters.observe("pa", &bad(&format!("\"garbage {i}\""))));
    }
    // Readable again for five rounds: one info.
    for _ in 0..5 {
        changes.extend(counters.observe("pa", &[]));
    }
    // And broken again: a new warning.
    for _ in 0..3 {
        changes.extend(counters.observe("pa", &bad("\"x\"")));
    }
    let count = |kind| changes.iter().filter(|(_, c)| *c == kind).count();
    let (warnings, recoveries) = (
        count(CounterChange::Unreadable),
        count(CounterChange::Readable),
    );
    assert_eq!((warnings, recoveries), (2, 1));
}

#[test]
fn unreadable_counters_are_tracked_per_port_and_direction_and_forgotten_with_the_port() {
    let mut counters = UnreadableCounters::default();
    let both = [
        (IN_KEY, BadCounter { shown: "1".into() }),
        (OUT_KEY, BadCounter { shown: "2".into() }),
    ];
    assert_eq!(
        counters.observe("pa", &both),
        [
            (IN_KEY, CounterChange::Unreadable),
            (OUT_KEY, CounterChange::Unreadable)
        ]
    );
    // Another port's counter is its own.
    assert_eq!(
        counters.observe("pb", &bad("1")),
        [(IN_KEY, CounterChange::Unreadable)]
    );
    assert!(counters.observe("pb", &bad("1")).is_empty());
    // Only the upload counter of pa recovers.
    assert_eq!(
        counters.observe("pa", &bad("1")),
        [(OUT_KEY, CounterChange::Readable)]
    );
    // pa is released: its memory goes; pb's stays.
    counters.retain(&[managed("al-b", "pb")]);
    assert!(counters.observe("pb", &bad("1")).is_empty());
    assert_eq!(
        counters.observe("pa", &bad("1")),
        [(IN_KEY, CounterChange::Unreadable)],
        "a new port with that id starts fresh"
    );
}
