//! Tests of the webhook tables: leases, their release after a crash, pruning, removal.

use super::*;

fn lease(store: &SledStore, now_ms: u64, lease_ms: u64) -> Lease {
    store
        .lease_due_delivery(now_ms, lease_ms, 100, |_| true)
        .unwrap()
}

fn delivery(store: &SledStore, webhook_id: &str, due: OffsetDateTime) -> Delivery {
    Delivery {
        seq: store.next_delivery_seq().unwrap(),
        webhook_id: webhook_id.into(),
        event_id: "ev_1".into(),
        event_type: "agent.connected".into(),
        state: DeliveryState::Pending,
        attempts: 0,
        created_at: due,
        next_attempt_at: Some(due),
        finished_at: None,
        last_status: None,
        last_error: None,
        body: "{}".into(),
    }
}

#[test]
fn leases_follow_the_schedule_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::ids::now();
    let ms = crate::ids::unix_ms(t0);
    {
        let store = SledStore::open(dir.path()).unwrap();
        let a = delivery(&store, "wh_a", t0);
        let b = delivery(&store, "wh_b", t0 + time::Duration::seconds(60));
        store.enqueue_deliveries(&[a.clone(), b]).unwrap();
        assert_eq!(store.next_webhook_due().unwrap(), Some(ms));
        assert!(matches!(lease(&store, ms - 1, ms + 10), Lease::NothingDue));
        let Lease::Blocked = store
            .lease_due_delivery(ms, ms + 10, 10, |id| id != "wh_a")
            .unwrap()
        else {
            panic!("wh_a is due but refused")
        };
        let Lease::Taken(leased) = lease(&store, ms, ms + 10_000) else {
            panic!("wh_a is due")
        };
        assert_eq!(leased.delivery, a);
        // Leased: nothing else is due now, the lease is the next deadline.
        assert!(matches!(lease(&store, ms, ms + 10), Lease::NothingDue));
        assert_eq!(store.next_webhook_due().unwrap(), Some(ms + 10_000));
        store.flush().unwrap();
    }
    // A crash mid-attempt: at start the lease is released, the delivery is due again.
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.release_webhook_leases().unwrap(), 1);
    assert_eq!(store.release_webhook_leases().unwrap(), 0);
    assert_eq!(store.next_webhook_due().unwrap(), Some(ms));
    let Lease::Taken(leased) = lease(&store, ms, ms + 20_000) else {
        panic!("the delivery is due again")
    };
    assert_eq!(leased.delivery.webhook_id, "wh_a");
    let mut done = leased.delivery.clone();
    done.state = DeliveryState::Delivered;
    done.next_attempt_at = None;
    store.settle_delivery(&leased, &done).unwrap();
    assert_eq!(store.pending_webhook_deliveries(), 1, "only wh_b is left");
    assert_eq!(
        store.webhook_deliveries("wh_a", 10).unwrap()[0].state,
        DeliveryState::Delivered
    );
}

#[test]
fn removed_endpoints_lose_their_deliveries_and_pruning_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let t0 = crate::ids::now();
    let endpoint = WebhookEndpoint {
        webhook_id: "wh_a".into(),
        url: "http://127.0.0.1:9/".into(),
        events: vec!["*".into()],
        secret_sealed: "canary-sealed-value".into(),
        created_at: t0,
        tenant: None,
    };
    assert!(!format!("{endpoint:?}").contains("canary"));
    store.put_webhook_endpoint(&endpoint).unwrap();
    let mut all = Vec::new();
    for _ in 0..5 {
        let mut d = delivery(&store, "wh_a", t0);
        d.state = DeliveryState::Delivered;
        all.push(d);
    }
    all.push(delivery(&store, "wh_a", t0));
    store.enqueue_deliveries(&all).unwrap();
    let newest: Vec<u64> = store
        .webhook_deliveries("wh_a", 2)
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(newest, vec![all[5].seq, all[4].seq], "newest first");
    assert_eq!(store.prune_webhook_deliveries("wh_a", 2).unwrap(), 3);
    let left = store.webhook_deliveries("wh_a", 100).unwrap();
    assert_eq!(left.len(), 3, "2 finished + the pending one");

    assert!(store.remove_webhook_endpoint("wh_a").unwrap());
    assert!(!store.remove_webhook_endpoint("wh_a").unwrap());
    assert!(store.webhook_deliveries("wh_a", 100).unwrap().is_empty());
    let now = crate::ids::unix_ms(t0);
    assert!(
        matches!(lease(&store, now, now + 1), Lease::NothingDue),
        "schedule entries of removed deliveries are dropped"
    );
    assert_eq!(store.pending_webhook_deliveries(), 0);
}
