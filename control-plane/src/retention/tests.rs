//! Every window at its boundary (a record one second inside stays, at its end it goes),
//! batching, and the queue filled for records written before it existed.

use super::*;
use crate::store::{
    AllocationRecord, AllocationState, AuditEvent, Delivery, DeliveryState, RotationRecord,
    SledStore, TokenRecord, UsageTotals,
};
use time::Duration as Span;

const DAY: Span = Span::days(1);

/// A whole-millisecond now (queue keys are milliseconds).
fn now() -> OffsetDateTime {
    let ms = i128::from(crate::ids::unix_ms(crate::ids::now()));
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap()
}

fn ended(id: &str, at: OffsetDateTime) -> AllocationRecord {
    AllocationRecord {
        state: AllocationState::Released,
        released_at: Some(at),
        ..AllocationRecord::example(id, at - DAY)
    }
}

fn setup(config: RetentionConfig) -> (tempfile::TempDir, SledStore, Retention) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let retention = Retention::new(Store::Sled(store.clone()), config, Clock::manual());
    (dir, store, retention)
}

async fn pass(retention: &Retention, at: OffsetDateTime) -> Pass {
    retention
        .sweep(at, &CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn each_allocation_window_ends_to_the_second() {
    let config = RetentionConfig {
        credentials_s: 86_400,
        allocation_detail_days: 90,
        financial_days: 2555,
        ..RetentionConfig::default()
    };
    let (_dir, store, retention) = setup(config);
    let t = now();
    store.put_allocation(&ended("a", t)).unwrap();
    let totals = UsageTotals {
        bytes_in: 5,
        bytes_out: 7,
        measured_at_ms: 1,
    };
    store.record_usage("a", "ag", totals).unwrap();
    let get = || store.allocation("a").unwrap();

    // Credentials: a day.
    assert!(pass(&retention, t + DAY - Span::seconds(1))
        .await
        .forgotten
        .is_empty());
    assert!(
        get().unwrap().password_sealed.is_some(),
        "purged a second early"
    );
    let done = pass(&retention, t + DAY).await;
    assert_eq!(done.forgotten.get("credentials"), Some(&1));
    assert_eq!(
        done.next,
        Some(t + Span::days(90)),
        "the detail window is next"
    );
    assert!(get().unwrap().password_sealed.is_none());
    assert_eq!(get().unwrap().host.as_deref(), Some("203.0.113.7"));

    // Operational detail: 90 days; the financial core stays.
    pass(&retention, t + Span::days(90) - Span::seconds(1)).await;
    assert!(!get().unwrap().detail_purged, "cleared a second early");
    pass(&retention, t + Span::days(90)).await;
    let core = get().unwrap();
    assert!(core.detail_purged);
    assert_eq!((core.imei.as_str(), core.login.as_str()), ("", ""));
    assert_eq!(
        (core.host, core.http_port, core.port_id),
        (None, None, None)
    );
    assert_eq!(core.request.imei, None);
    assert_eq!(core.order_id, "o-a");
    assert_eq!(core.agent_id, "ag");
    assert_eq!(core.country.as_deref(), Some("DE"));
    assert_eq!(core.request.bandwidth_kbit, Some(1000));
    assert_eq!((core.created_at, core.released_at), (t - DAY, Some(t)));
    assert!(store.usage("a").unwrap().is_some(), "usage is financial");

    // The financial core: 7 years, then nothing of it is left.
    let end = t + Span::days(2555);
    pass(&retention, end - Span::seconds(1)).await;
    assert!(get().is_some(), "deleted a second early");
    let done = pass(&retention, end).await;
    assert_eq!(done.forgotten.get("allocation_record"), Some(&1));
    assert_eq!(done.next, None);
    assert!(get().is_none());
    assert!(store.usage("a").unwrap().is_none());
    let tables = [
        "allocations",
        "allocation_orders",
        "allocations_by_tenant",
        "allocation_usage",
        "webhook_expiring",
    ];
    for table in tables {
        assert_eq!(
            store.rows(table),
            0,
            "{table} keeps a row of a deleted allocation"
        );
    }
    for kind in RetentionKind::ALL {
        assert_eq!(store.retention_queued(kind), 0, "{kind:?}");
    }
    assert_eq!(
        store
            .allocation_counts()
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        0
    );
}

#[tokio::test]
async fn rotations_deliveries_and_tokens_end_at_their_window() {
    let (_dir, store, retention) = setup(RetentionConfig::default());
    let t = now();
    let rotation = |at: OffsetDateTime| RotationRecord {
        at_ms: crate::ids::unix_ms(at),
        old_ip: Some("198.51.100.1".into()),
        new_ip: Some("198.51.100.2".into()),
        changed: true,
        automatic: false,
    };
    store.record_rotation("ag", "111", &rotation(t)).unwrap();
    store.record_rotation("ag", "222", &rotation(t)).unwrap();
    // A later rotation of 222 replaces the first: the first's window must not delete it.
    store
        .record_rotation("ag", "222", &rotation(t + DAY))
        .unwrap();
    let delivery = |seq: u64, state: DeliveryState| Delivery {
        seq,
        webhook_id: "wh".into(),
        event_id: format!("ev{seq}"),
        event_type: "allocation.active".into(),
        state,
        attempts: 1,
        created_at: t,
        next_attempt_at: None,
        finished_at: Some(t),
        last_status: Some(200),
        last_error: None,
        body: "{}".into(),
    };
    let deliveries = [
        delivery(1, DeliveryState::Delivered),
        delivery(2, DeliveryState::Pending),
    ];
    store.enqueue_deliveries(&deliveries).unwrap();
    let token = TokenRecord {
        label: "box".into(),
        created_at: t - DAY,
        expires_at: t,
        used: true,
        agent_id: None,
    };
    store
        .insert_enrollment_token("secret-token", &token)
        .unwrap();

    let window = t + Span::days(90);
    assert!(pass(&retention, window - Span::seconds(1))
        .await
        .forgotten
        .is_empty());
    assert!(store.last_rotation("ag", "111").is_some());
    assert_eq!(store.webhook_deliveries("wh", 10).unwrap().len(), 2);
    assert_eq!(store.enrollment_tokens().unwrap().len(), 1);

    let done = pass(&retention, window).await;
    let expect = [
        ("enrollment_token", 1),
        ("rotation", 1),
        ("webhook_delivery", 1),
    ];
    assert_eq!(done.forgotten, expect.into_iter().collect());
    assert!(store.last_rotation("ag", "111").is_none());
    let later = store.last_rotation("ag", "222").unwrap();
    assert_eq!(
        later.at_ms,
        crate::ids::unix_ms(t + DAY),
        "a later rotation stays"
    );
    let left = store.webhook_deliveries("wh", 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].state,
        DeliveryState::Pending,
        "the outbox is never trimmed"
    );
    assert!(store.enrollment_tokens().unwrap().is_empty());
    // The pending delivery waits another window; the later rotation has its own.
    assert_eq!(done.next, Some(t + Span::days(91)));
}

#[tokio::test]
async fn an_audit_entry_stays_inside_its_window_and_goes_outside() {
    let config = RetentionConfig {
        audit_days: 1,
        ..RetentionConfig::default()
    };
    let (_dir, store, retention) = setup(config);
    let t = now();
    // The newest entry is never pruned (it anchors the keys' order): one comes later.
    for (i, at) in [t, t + Span::days(2)].into_iter().enumerate() {
        let event = AuditEvent {
            at,
            actor: "system".into(),
            action: AuditAction::IpRotated,
            target: format!("modem:{i}"),
            details: json!({}),
        };
        store.append_audit(&event).unwrap();
    }
    let count = || {
        store
            .audit_page(None, OffsetDateTime::UNIX_EPOCH, 10)
            .unwrap()
            .entries
            .len()
    };
    pass(&retention, t + DAY - Span::seconds(1)).await;
    assert_eq!(count(), 2, "deleted a second early");
    let done = pass(&retention, t + DAY + Span::seconds(1)).await;
    assert_eq!(done.forgotten.get("audit"), Some(&1));
    assert_eq!(count(), 1, "kept a second late");

    let forever = RetentionConfig {
        audit_days: 0,
        ..RetentionConfig::default()
    };
    let keep = Retention::new(Store::Sled(store.clone()), forever, Clock::manual());
    pass(&keep, t + Span::days(3650)).await;
    assert_eq!(count(), 1, "0 keeps entries forever");
}

#[tokio::test]
async fn a_pass_goes_in_batches_and_a_cancelled_one_stops_after_one() {
    let (_dir, store, retention) = setup(RetentionConfig::default());
    let t = now();
    for i in 0..BATCH + 5 {
        store
            .put_allocation(&ended(&format!("a{i:05}"), t))
            .unwrap();
    }
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let done = retention
        .sweep(t + Span::days(30), &cancelled)
        .await
        .unwrap();
    assert_eq!(done.forgotten.get("credentials"), Some(&BATCH));
    let done = pass(&retention, t + Span::days(30)).await;
    assert_eq!(done.forgotten.get("credentials"), Some(&5));
    assert_eq!(store.retention_queued(RetentionKind::Credentials), 0);
    assert_eq!(
        pass(&retention, t + Span::days(30)).await.forgotten,
        BTreeMap::new(),
        "never rescans what it keeps"
    );
}

#[tokio::test]
async fn records_written_before_the_queue_existed_are_queued_once_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.put_allocation(&ended("old", t)).unwrap();
        store.flush().unwrap();
    }
    {
        // What a database from before the queue looks like: no queue tree at all.
        let db = sled::open(dir.path().join("db")).unwrap();
        db.drop_tree("retention_queue").unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.retention_queued(RetentionKind::Credentials), 1);
    // The later windows are queued as the earlier ones end.
    assert_eq!(store.retention_queued(RetentionKind::AllocationRecord), 0);
    let retention = Retention::new(
        Store::Sled(store.clone()),
        RetentionConfig::default(),
        Clock::manual(),
    );
    pass(&retention, t + Span::days(30)).await;
    assert!(store
        .allocation("old")
        .unwrap()
        .unwrap()
        .password_sealed
        .is_none());
}

#[tokio::test]
async fn a_wake_shortens_the_sleep_to_one_credentials_window() {
    let clock = Clock::manual();
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let config = RetentionConfig {
        credentials_s: 60,
        ..RetentionConfig::default()
    };
    let retention = Retention::new(Store::Sled(store.clone()), config, clock.clone());
    let wake = retention.waker();
    let shutdown = CancellationToken::new();
    let t = clock.now();
    store
        .put_allocation(&ended("first", t - Span::hours(1)))
        .unwrap();
    let task = tokio::spawn(retention.run(shutdown.clone()));
    farmhand_test_support::eventually("the first pass", || async {
        store
            .allocation("first")
            .unwrap()
            .unwrap()
            .password_sealed
            .is_none()
    })
    .await;
    // Nothing else is queued that soon: the task sleeps until the detail window ends, or
    // an hour. An allocation ends…
    store.put_allocation(&ended("late", t)).unwrap();
    wake.notify_one();
    tokio::task::yield_now().await;
    // …and is purged one minute later, not at the hourly pass.
    clock.advance(std::time::Duration::from_secs(61));
    farmhand_test_support::eventually("purged after one credentials window", || async {
        store
            .allocation("late")
            .unwrap()
            .unwrap()
            .password_sealed
            .is_none()
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
}
