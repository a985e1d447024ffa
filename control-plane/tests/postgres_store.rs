//! The postgres backend (`pg::PgStore`) against the sled one (the default), on the same
//! scenarios through the seam (`Store`): each scenario is a macro run once on each backend,
//! so both must answer alike — keys, enrollment tokens and enrollment (also two nodes racing for one
//! token), agents and modem owners, allocations and their pages, rotations, usage, webhook
//! endpoints and deliveries, the command outbox, the audit log — and what only a cluster
//! needs: the schema's guards (capacity, ports), each delivery claimed by one node. PostgreSQL is a
//! real throw-away cluster (`initdb`); skipped with a printed reason when none is
//! installed, never in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_control::config::{PgTls, StoreConfig};
use farmhand_control::store::pg::{self, migrations, PgStore};
use farmhand_control::store::{
    AgentRecord, AllocationRecord, AllocationRequest, AllocationState, ApiKeyRecord, AuditAction,
    AuditEvent, Delivery, DeliveryState, EnrollError, EraseError, InsertOutcome, Lease,
    LeasedDelivery, PendingCommand, ProbeRecord, ProbeTrack, QualityHour, Role, RotationRecord,
    TokenRecord, UsageTotals, WebhookEndpoint, LATENCY_BUCKETS,
};
use farmhand_control::Store;
use farmhand_protocol::{AllocationUsage, Command, CommandBody, Release, UsageReport};
use farmhand_test_support::postgres::PgCluster;
use serde_json::json;
use time::{Duration, OffsetDateTime};

/// A migrated, empty database on `cluster`.
async fn postgres(cluster: &PgCluster) -> PgStore {
    let config = StoreConfig::postgres(&cluster.url, PgTls::Disable);
    let pool = pg::pool(&config).unwrap();
    migrations::migrate(&pool).await.unwrap();
    PgStore::new(pool)
}

/// Runs `$scenario` on a fresh sled store and on a fresh PostgreSQL database.
macro_rules! on_both_backends {
    ($scenario:ident) => {{
        let dir = tempfile::tempdir().unwrap();
        let sled = Store::open(dir.path()).unwrap();
        $scenario!(sled);
        if let Some(cluster) = PgCluster::start() {
            let pg = Store::Postgres(postgres(&cluster).await);
            $scenario!(pg);
        }
    }};
}

fn now() -> OffsetDateTime {
    // Whole seconds: PostgreSQL keeps microseconds, RFC 3339 in sled keeps nanoseconds.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap()
}

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        public_key: vec![7; 32],
        label: String::new(),
        hostname: "box-1".into(),
        enrolled_at: now(),
        revoked: false,
        approved: true,
    }
}

macro_rules! keys {
    ($store:ident) => {{
        let t0 = now();
        let shop = ApiKeyRecord {
            role: Role::Marketplace,
            name: "shop".into(),
            created_at: t0,
            tenant: Some("acme".into()),
            seller: None,
            expires_at: Some(t0 + Duration::hours(1)),
        };
        let ops = ApiKeyRecord {
            role: Role::Admin,
            name: "ops".into(),
            created_at: t0,
            tenant: None,
            seller: None,
            expires_at: None,
        };
        let shop_id = $store.insert_api_key("fh_shop", &shop).await.unwrap();
        let ops_id = $store.insert_api_key("fh_ops", &ops).await.unwrap();
        assert!(shop_id.starts_with("key_") && shop_id != ops_id);
        let berlin = ApiKeyRecord {
            role: Role::Seller,
            name: "berlin-ops".into(),
            created_at: t0,
            tenant: None,
            seller: Some("seller-berlin".into()),
            expires_at: None,
        };
        let berlin_id = $store.insert_api_key("fh_berlin", &berlin).await.unwrap();
        let found = $store.find_api_key("fh_berlin", t0).await.unwrap().unwrap();
        assert_eq!(found.record, berlin);
        assert_eq!(
            (found.record.seller(), found.record.tenant()),
            (Some("seller-berlin"), None)
        );
        assert!($store.revoke_api_key(&berlin_id).await.unwrap().is_some());

        let found = $store.find_api_key("fh_shop", t0).await.unwrap().unwrap();
        assert_eq!(
            (found.key_id.as_str(), &found.record),
            (shop_id.as_str(), &shop)
        );
        assert_eq!(found.last_used_at, None);
        let later = t0 + Duration::hours(2);
        assert!(
            $store
                .find_api_key("fh_shop", later)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
        assert!($store.find_api_key("fh_nope", t0).await.unwrap().is_none());

        let mut ids: Vec<String> = vec![shop_id.clone(), ops_id.clone()];
        ids.sort();
        let listed = $store.api_keys().await.unwrap();
        let listed_ids: Vec<String> = listed.iter().map(|k| k.key_id.clone()).collect();
        assert_eq!(listed_ids, ids, "by id, expired ones included");
        assert!($store.api_key_exists(&ops_id).await.unwrap());

        // Use is noted to the minute.
        $store.touch_api_key(&shop_id, t0).await.unwrap();
        $store
            .touch_api_key(&shop_id, t0 + Duration::seconds(30))
            .await
            .unwrap();
        let used = $store.find_api_key("fh_shop", t0).await.unwrap().unwrap();
        assert_eq!(used.last_used_at, Some(t0));
        $store
            .touch_api_key(&shop_id, t0 + Duration::seconds(60))
            .await
            .unwrap();
        let used = $store.find_api_key("fh_shop", t0).await.unwrap().unwrap();
        assert_eq!(used.last_used_at, Some(t0 + Duration::seconds(60)));
        $store.touch_api_key("key_000000000000", t0).await.unwrap();

        assert_eq!($store.revoke_api_key(&shop_id).await.unwrap(), Some(shop));
        assert_eq!($store.revoke_api_key(&shop_id).await.unwrap(), None);
        assert!($store.find_api_key("fh_shop", t0).await.unwrap().is_none());
        assert!(!$store.api_key_exists(&shop_id).await.unwrap());
    }};
}

#[tokio::test]
async fn api_keys_behave_alike() {
    on_both_backends!(keys);
}

macro_rules! tokens {
    ($store:ident) => {{
        let t0 = now();
        let token = |label: &str, expires_at| TokenRecord {
            label: label.into(),
            created_at: t0,
            expires_at,
            used: false,
            agent_id: None,
        };
        let day = t0 + Duration::days(1);
        $store
            .insert_enrollment_token("et_a", &token("rack-a", day))
            .await
            .unwrap();
        $store
            .insert_enrollment_token("et_old", &token("old", t0 - Duration::seconds(1)))
            .await
            .unwrap();
        $store
            .insert_enrollment_token("et_b", &token("rack-b", day))
            .await
            .unwrap();
        assert_eq!($store.enrollment_tokens().await.unwrap().len(), 3);

        let enrolled = $store.enroll("et_a", agent("ag_1"), t0).await.unwrap();
        assert_eq!(
            enrolled.label, "rack-a",
            "the agent takes the token's label"
        );
        assert_eq!($store.agent("ag_1").await.unwrap(), Some(enrolled));
        for (used_or_bad, id) in [("et_a", "ag_2"), ("et_old", "ag_3"), ("et_zz", "ag_4")] {
            let refused = $store.enroll(used_or_bad, agent(id), t0).await.unwrap_err();
            assert!(
                matches!(refused, EnrollError::InvalidToken),
                "{used_or_bad}: {refused}"
            );
            assert_eq!($store.agent(id).await.unwrap(), None);
        }
        let tokens = $store.enrollment_tokens().await.unwrap();
        let a = tokens.iter().find(|(_, t)| t.label == "rack-a").unwrap();
        assert!(a.1.used);
        assert_eq!(a.1.agent_id.as_deref(), Some("ag_1"));

        // A used token stays (it names its agent); an unused one goes.
        let used = $store.revoke_enrollment_token(&a.0).await.unwrap().unwrap();
        assert!(used.used);
        let b = tokens.iter().find(|(_, t)| t.label == "rack-b").unwrap();
        assert!(
            !$store
                .revoke_enrollment_token(&b.0)
                .await
                .unwrap()
                .unwrap()
                .used
        );
        assert_eq!($store.revoke_enrollment_token(&b.0).await.unwrap(), None);
        assert_eq!($store.enrollment_tokens().await.unwrap().len(), 2);
        let refused = $store.enroll("et_b", agent("ag_5"), t0).await.unwrap_err();
        assert!(matches!(refused, EnrollError::InvalidToken));

        // Two enrollments racing for one token: exactly one agent.
        $store
            .insert_enrollment_token("et_c", &token("rack-c", day))
            .await
            .unwrap();
        let (x, y) = tokio::join!(
            $store.enroll("et_c", agent("ag_x"), t0),
            $store.enroll("et_c", agent("ag_y"), t0)
        );
        assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "{x:?} {y:?}");
    }};
}

#[tokio::test]
async fn enrollment_tokens_behave_alike_and_enroll_one_agent_each() {
    on_both_backends!(tokens);
}

/// Two nodes on one database racing for one token: one agent, whichever node wins.
#[tokio::test]
async fn a_token_enrolls_one_agent_across_nodes() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let a = postgres(&cluster).await;
    let b = postgres(&cluster).await;
    let t0 = now();
    let record = TokenRecord {
        label: "rack".into(),
        created_at: t0,
        expires_at: t0 + Duration::days(1),
        used: false,
        agent_id: None,
    };
    a.insert_enrollment_token("et_race", &record).await.unwrap();
    let mut wins = 0;
    let results = race_for_token(&a, &b, t0).await;
    for result in results {
        match result {
            Ok(_) => wins += 1,
            Err(EnrollError::InvalidToken) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(a.agents().await.unwrap().len(), 1);
}

/// Three enrollments with one token, from two nodes at once.
async fn race_for_token(
    a: &PgStore,
    b: &PgStore,
    t0: OffsetDateTime,
) -> Vec<Result<AgentRecord, EnrollError>> {
    let (x, y, z) = tokio::join!(
        a.enroll("et_race", agent("ag_a"), t0),
        b.enroll("et_race", agent("ag_b"), t0),
        a.enroll("et_race", agent("ag_c"), t0)
    );
    vec![x, y, z]
}

macro_rules! agents {
    ($store:ident) => {{
        let t0 = now();
        let record = TokenRecord {
            label: "rack".into(),
            created_at: t0,
            expires_at: t0 + Duration::days(1),
            used: false,
            agent_id: None,
        };
        for (token, id, approved) in [("et_1", "ag_b", false), ("et_2", "ag_a", true)] {
            $store
                .insert_enrollment_token(token, &record)
                .await
                .unwrap();
            let held = AgentRecord {
                approved,
                ..agent(id)
            };
            $store.enroll(token, held, t0).await.unwrap();
        }
        let ids: Vec<String> = $store
            .agents()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.agent_id)
            .collect();
        assert_eq!(ids, ["ag_a", "ag_b"]);
        assert_eq!(
            $store.approve_agent("ag_b").await.unwrap(),
            Some(true),
            "was held"
        );
        assert_eq!($store.approve_agent("ag_b").await.unwrap(), Some(false));
        assert_eq!($store.approve_agent("ag_zz").await.unwrap(), None);
        assert!($store.agent("ag_b").await.unwrap().unwrap().approved);
        assert!($store.revoke_agent("ag_a").await.unwrap());
        assert!(!$store.revoke_agent("ag_zz").await.unwrap());
        assert!($store.agent("ag_a").await.unwrap().unwrap().revoked);

        $store
            .set_modem_owner("359000000000002", "ag_a")
            .await
            .unwrap();
        $store
            .set_modem_owner("359000000000001", "ag_a")
            .await
            .unwrap();
        $store
            .set_modem_owner("359000000000001", "ag_b")
            .await
            .unwrap();
        assert_eq!(
            $store.modem_owners().await.unwrap(),
            [
                ("359000000000001".to_string(), "ag_b".to_string()),
                ("359000000000002".to_string(), "ag_a".to_string())
            ]
        );
    }};
}

#[tokio::test]
async fn agents_and_modem_owners_behave_alike() {
    on_both_backends!(agents);
}

fn release(agent_id: &str, id: &str, deadline_ms: u64) -> PendingCommand {
    let command = Command {
        id: id.into(),
        deadline_ms,
        body: CommandBody::Release(Release {
            allocation_id: format!("al_{id}"),
        }),
    };
    PendingCommand::new(agent_id, &command)
}

macro_rules! commands {
    ($store:ident) => {{
        for (agent, id, deadline) in [
            ("ag_1", "c2", 2000),
            ("ag_1", "c1", 1000),
            ("ag_2", "c3", 3000),
        ] {
            $store
                .put_pending_command(&release(agent, id, deadline))
                .await
                .unwrap();
        }
        let ids = |list: Vec<PendingCommand>| -> Vec<String> {
            list.into_iter().map(|c| c.command_id).collect()
        };
        let queued = $store.pending_commands("ag_1").await.unwrap();
        assert_eq!(queued[0], release("ag_1", "c1", 1000), "stored whole");
        assert_eq!(ids(queued), ["c1", "c2"]);
        assert!($store.remove_pending_command("ag_1", "c1").await.unwrap());
        assert!(!$store.remove_pending_command("ag_1", "c1").await.unwrap());
        // At its deadline a command goes; a millisecond before, it stays.
        assert_eq!($store.purge_expired_commands(1999).await.unwrap(), 0);
        assert_eq!($store.purge_expired_commands(2000).await.unwrap(), 1);
        assert_eq!(
            ids($store.pending_commands("ag_1").await.unwrap()),
            Vec::<String>::new()
        );
        assert_eq!($store.purge_agent_commands("ag_2").await.unwrap(), 1);
        assert!($store.pending_commands("ag_2").await.unwrap().is_empty());

        // Many at once (PostgreSQL writes concurrent ones together): each is queued, a
        // command queued twice is there once, as its last copy, and each removal answers
        // for its own command.
        let puts = (0..200_u64).map(|i| {
            let store = $store.clone();
            async move {
                let command = release("ag_3", &format!("m{i:03}"), 10_000 + i);
                store.put_pending_command(&command).await
            }
        });
        for put in futures_util::future::join_all(puts).await {
            put.unwrap();
        }
        let twice = [release("ag_3", "m000", 1), release("ag_3", "m000", 99_999)];
        let (first, second) = tokio::join!(
            $store.put_pending_command(&twice[0]),
            $store.put_pending_command(&twice[1])
        );
        first.unwrap();
        second.unwrap();
        let queued = $store.pending_commands("ag_3").await.unwrap();
        assert_eq!(queued.len(), 200);
        assert!(
            [1, 99_999].contains(&queued[0].deadline_ms),
            "{:?}",
            queued[0]
        );
        let removals = (0..220_u64).map(|i| {
            let store = $store.clone();
            async move {
                let removed = store
                    .remove_pending_command("ag_3", &format!("m{i:03}"))
                    .await;
                (i, removed.unwrap())
            }
        });
        for (i, removed) in futures_util::future::join_all(removals).await {
            assert_eq!(removed, i < 200, "command m{i:03}");
        }
        assert!($store.pending_commands("ag_3").await.unwrap().is_empty());
    }};
}

#[tokio::test]
async fn the_command_outbox_behaves_alike() {
    on_both_backends!(commands);
}

macro_rules! audit {
    ($store:ident) => {{
        let t0 = now() - Duration::days(40);
        for i in 0..25_i64 {
            let event = AuditEvent {
                at: t0 + Duration::days(i / 10 * 20),
                actor: "system".into(),
                action: AuditAction::IpRotated,
                target: format!("modem:{i}"),
                details: json!({"n": i}),
            };
            $store.append_audit(&event).await.unwrap();
        }
        // Pages of 10 by cursor: every entry once, in order.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = $store.audit_page(after, t0, 10).await.unwrap();
            after = page.entries.last().map(|e| e.cursor);
            seen.extend(page.entries.into_iter().map(|e| e.event.target));
            if !page.more {
                break;
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("modem:{i}")).collect();
        assert_eq!(seen, expected);
        // `since` keeps the entries at or after it.
        let recent = $store.audit_since(t0 + Duration::days(20), 100).await.unwrap();
        assert_eq!(recent.len(), 15);
        assert_eq!(recent[0].details, json!({"n": 10}));
        assert_eq!(recent[0].action, AuditAction::IpRotated);
        // Pruning goes oldest first, in batches, and never takes the newest entry.
        let cutoff = t0 + Duration::days(21);
        assert_eq!($store.prune_audit_before(cutoff, 4).await.unwrap(), 4);
        assert_eq!($store.prune_audit_before(cutoff, 100).await.unwrap(), 16);
        assert_eq!($store.prune_audit_before(cutoff, 100).await.unwrap(), 0);
        let left = $store.audit_since(t0, 100).await.unwrap();
        assert_eq!(left.len(), 5);
        let far = t0 + Duration::days(400);
        assert_eq!($store.prune_audit_before(far, 100).await.unwrap(), 4);
        assert_eq!($store.audit_since(t0, 100).await.unwrap()[0].target, "modem:24");
        $store.audit("cli", AuditAction::KeyCreated, "key:ops", json!({})).await;
        assert_eq!($store.audit_since(t0, 100).await.unwrap().len(), 2);

        // Many at once (PostgreSQL writes concurrent ones together): every entry lands
        // whole, once, and each caller's entries keep their order.
        let callers = (0..20_i64).map(|caller| {
            let store = $store.clone();
            async move {
                for n in 0..10_i64 {
                    let event = AuditEvent {
                        at: far,
                        actor: format!("caller-{caller}"),
                        action: AuditAction::AllocationCreated,
                        target: format!("allocation:{caller}-{n}"),
                        details: json!({"n": n}),
                    };
                    store.append_audit(&event).await.unwrap();
                }
            }
        });
        futures_util::future::join_all(callers).await;
        let burst = $store.audit_since(far, 1000).await.unwrap();
        assert_eq!(burst.len(), 200);
        for caller in 0..20 {
            let actor = format!("caller-{caller}");
            let order: Vec<i64> = burst
                .iter()
                .filter(|e| e.actor == actor)
                .map(|e| e.details["n"].as_i64().unwrap())
                .collect();
            assert_eq!(order, (0..10).collect::<Vec<_>>(), "{actor}");
        }
    }};
}

#[tokio::test]
async fn the_audit_log_behaves_alike() {
    on_both_backends!(audit);
}

/// What the schema's capacity trigger counts against: on PostgreSQL the plane records each
/// modem's capacity; sled's single node keeps it in its in-memory fleet (nothing stored).
trait Inventory {
    async fn has_modem(&self, agent_id: &str, imei: &str, capacity: u32);
}

impl Inventory for Store {
    async fn has_modem(&self, agent_id: &str, imei: &str, capacity: u32) {
        match self {
            Store::Sled(_) => {}
            Store::Postgres(pg) => pg.has_modem(agent_id, imei, capacity).await,
        }
    }
}

impl Inventory for PgStore {
    async fn has_modem(&self, agent_id: &str, imei: &str, capacity: u32) {
        // A modem belongs to an enrolled agent.
        if self.agent(agent_id).await.unwrap().is_none() {
            let token = format!("et_{agent_id}");
            let record = TokenRecord {
                label: "rack".into(),
                created_at: now(),
                expires_at: now() + Duration::days(1),
                used: false,
                agent_id: None,
            };
            self.insert_enrollment_token(&token, &record).await.unwrap();
            self.enroll(&token, agent(agent_id), now()).await.unwrap();
        }
        self.put_modem(agent_id, imei, capacity, &json!({"imei": imei}))
            .await
            .unwrap();
    }
}

const IMEI_A: &str = "359000000000001";
const IMEI_B: &str = "359000000000002";

fn allocation(id: &str, tenant: &str, order: &str, agent_id: &str, imei: &str) -> AllocationRecord {
    let created_at = OffsetDateTime::now_utc();
    AllocationRecord {
        allocation_id: id.into(),
        order_id: order.into(),
        state: AllocationState::Pending,
        imei: imei.into(),
        agent_id: agent_id.into(),
        carrier: Some("Vodafone".into()),
        country: Some("DE".into()),
        host: None,
        http_port: None,
        socks_port: None,
        port_id: None,
        login: format!("u_{id}"),
        password_sealed: Some("sealed".into()),
        created_at,
        expires_at: created_at + Duration::hours(1),
        released_at: None,
        release_reason: None,
        failure: None,
        request: AllocationRequest {
            order_id: order.into(),
            duration_s: 3600,
            country: None,
            carrier: None,
            imei: None,
            rotate_every_s: None,
            bandwidth_kbit: None,
            traffic_quota_mb: None,
        },
        replacements: Vec::new(),
        tenant: tenant.into(),
        detail_purged: false,
    }
}

fn ids(records: &[AllocationRecord]) -> Vec<&str> {
    records.iter().map(|r| r.allocation_id.as_str()).collect()
}

macro_rules! allocations {
    ($store:ident) => {{
        $store.has_modem("ag_1", IMEI_A, 10).await;
        $store.has_modem("ag_2", IMEI_B, 10).await;
        let first = allocation("al_1", "default", "o-1", "ag_1", IMEI_A);
        assert!(matches!(
            $store.insert_allocation(&first).await.unwrap(),
            InsertOutcome::Inserted
        ));
        let again = allocation("al_2", "default", "o-1", "ag_1", IMEI_A);
        match $store.insert_allocation(&again).await.unwrap() {
            InsertOutcome::Existing(existing) => assert_eq!(*existing, first),
            other => panic!("one order, two allocations: {other:?}"),
        }
        assert_eq!($store.allocation("al_2").await.unwrap(), None);

        // A failed attempt holds no port: the order may be tried again.
        let mut failed = first.clone();
        failed.state = AllocationState::Failed;
        failed.released_at = Some(failed.created_at);
        $store.save_allocation(&failed).await.unwrap();
        let mut retry = allocation("al_3", "default", "o-1", "ag_1", IMEI_A);
        assert!(matches!(
            $store.insert_allocation(&retry).await.unwrap(),
            InsertOutcome::Inserted
        ));
        assert_eq!(
            $store.allocation_by_order("default", "o-1").await.unwrap(),
            Some(retry.clone())
        );
        retry.state = AllocationState::Active;
        retry.host = Some("203.0.113.7".into());
        retry.http_port = Some(8001);
        retry.socks_port = Some(5001);
        $store.save_allocation(&retry).await.unwrap();
        assert_eq!(
            $store.allocation("al_3").await.unwrap(),
            Some(retry.clone())
        );

        let other = allocation("al_4", "acme", "o-1", "ag_2", IMEI_B);
        $store.insert_allocation(&other).await.unwrap();
        let all = |_: &AllocationRecord| true;
        assert_eq!(
            ids(&$store.agent_allocations("ag_1", all).await.unwrap()),
            ["al_3"]
        );
        let ports = $store.desired_ports("ag_2").await.unwrap();
        assert_eq!((ports[0].allocation_id.as_str(), ports.len()), ("al_4", 1));
        let mut live = $store.live_allocations().await.unwrap();
        live.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
        assert_eq!(ids(&live), ["al_3", "al_4"]);
        let acme = |a: &AllocationRecord| a.tenant == "acme";
        assert_eq!(
            ids(&$store.allocations_where(acme).await.unwrap()),
            ["al_4"]
        );

        // Only in-service allocations expire; the next deadline is told.
        let (due, next) = $store
            .expiring(retry.expires_at - Duration::seconds(1))
            .await
            .unwrap();
        assert!(due.is_empty());
        assert_eq!(next, Some(retry.expires_at));
        let (due, next) = $store.expiring(retry.expires_at).await.unwrap();
        assert_eq!((ids(&due), next), (vec!["al_3"], None));

        let counts = $store.allocation_counts().await.unwrap();
        let count = |state| counts.iter().find(|(s, _)| *s == state).unwrap().1;
        assert_eq!(
            [
                count(AllocationState::Pending),
                count(AllocationState::Active),
                count(AllocationState::Failed)
            ],
            [1, 1, 1]
        );

        // Credentials go only once the allocation has ended.
        assert!(!$store.purge_credentials("al_3").await.unwrap());
        let mut released = retry.clone();
        released.state = AllocationState::Released;
        released.released_at = Some(OffsetDateTime::now_utc());
        $store.save_allocation(&released).await.unwrap();
        assert!($store.purge_credentials("al_3").await.unwrap());
        assert!(!$store.purge_credentials("al_3").await.unwrap());
        let purged = $store.allocation("al_3").await.unwrap().unwrap();
        assert_eq!(purged.password_sealed, None);
        assert_eq!(purged.login, "u_al_3");
        assert!($store
            .agent_allocations("ag_1", all)
            .await
            .unwrap()
            .is_empty());
    }};
}

#[tokio::test]
async fn allocations_behave_alike() {
    on_both_backends!(allocations);
}

macro_rules! paging {
    ($store:ident) => {{
        $store.has_modem("ag_1", IMEI_A, 100).await;
        let mut expected = Vec::new();
        for tenant in ["acme", "default"] {
            for i in 0..7 {
                let id = format!("al_{tenant}_{i}");
                let record = allocation(&id, tenant, &format!("o-{i}"), "ag_1", IMEI_A);
                $store.insert_allocation(&record).await.unwrap();
                expected.push(id);
            }
        }
        let odd = |a: &AllocationRecord| a.allocation_id.ends_with(['1', '3', '5']);
        for (tenant, limit, examine, keep_odd) in [
            (None, 3, 100, false),
            (Some("acme"), 2, 100, false),
            (Some("default"), 10, 2, true),
        ] {
            let mut seen = Vec::new();
            let mut cursor: Option<Vec<u8>> = None;
            loop {
                let page = $store
                    .allocations_page(tenant, cursor.as_deref(), limit, examine, |a| {
                        !keep_odd || odd(a)
                    })
                    .await
                    .unwrap();
                assert!(page.records.len() <= limit);
                seen.extend(page.records.into_iter().map(|r| r.allocation_id));
                match page.next_cursor {
                    Some(hex) => cursor = Some(farmhand_control::ids::unhex(&hex).unwrap()),
                    None => break,
                }
            }
            let want: Vec<String> = expected
                .iter()
                .filter(|id| tenant.is_none_or(|t| id.starts_with(&format!("al_{t}_"))))
                .filter(|id| !keep_odd || id.ends_with(['1', '3', '5']))
                .cloned()
                .collect();
            assert_eq!(seen, want, "{tenant:?} limit {limit} examine {examine}");
        }
    }};
}

#[tokio::test]
async fn allocation_pages_behave_alike() {
    on_both_backends!(paging);
}

/// The schema keeps a modem's capacity and one port per box whichever node writes.
#[tokio::test]
async fn postgres_refuses_past_a_modems_capacity_and_a_shared_port() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = (postgres(&cluster).await, postgres(&cluster).await);
    a.has_modem("ag_1", IMEI_A, 1).await;
    a.has_modem("ag_1", IMEI_B, 5).await;
    let (first, second) = (
        allocation("al_x", "default", "o-x", "ag_1", IMEI_A),
        allocation("al_y", "default", "o-y", "ag_1", IMEI_A),
    );
    let (x, y) = tokio::join!(a.insert_allocation(&first), b.insert_allocation(&second));
    let outcomes = [x.unwrap(), y.unwrap()];
    let inserted = |o: &InsertOutcome| matches!(o, InsertOutcome::Inserted);
    let full = |o: &InsertOutcome| matches!(o, InsertOutcome::ModemFull);
    assert_eq!(
        outcomes.iter().filter(|o| inserted(o)).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| full(o)).count(),
        1,
        "{outcomes:?}"
    );

    let mut one = allocation("al_1", "default", "o-1", "ag_1", IMEI_B);
    one.http_port = Some(8001);
    a.insert_allocation(&one).await.unwrap();
    let mut two = allocation("al_2", "default", "o-2", "ag_1", IMEI_B);
    two.http_port = Some(8001);
    assert!(
        b.insert_allocation(&two).await.is_err(),
        "one port, two allocations"
    );
    let unknown = allocation("al_3", "default", "o-3", "ag_9", IMEI_B);
    let outcome = a.insert_allocation(&unknown).await.unwrap();
    assert!(
        matches!(outcome, InsertOutcome::ModemUnknown),
        "a modem nobody reported: {outcome:?}"
    );
}

macro_rules! rotations {
    ($store:ident) => {{
        let at = |ms: u64, ip: &str| RotationRecord {
            at_ms: ms,
            old_ip: Some("198.51.100.1".into()),
            new_ip: Some(ip.into()),
            changed: true,
            automatic: false,
        };
        assert!($store
            .record_rotation("ag_1", IMEI_A, &at(1000, "198.51.100.2"))
            .await
            .unwrap());
        assert!(!$store
            .record_rotation("ag_1", IMEI_A, &at(900, "198.51.100.9"))
            .await
            .unwrap());
        assert!($store
            .record_rotation("ag_1", IMEI_A, &at(1000, "198.51.100.3"))
            .await
            .unwrap());
        assert!($store
            .record_rotation("ag_2", IMEI_B, &at(2000, "198.51.100.4"))
            .await
            .unwrap());
        assert_eq!(
            $store.last_rotation("ag_1", IMEI_A).await.unwrap(),
            Some(at(1000, "198.51.100.3"))
        );
        assert_eq!($store.last_rotation("ag_2", IMEI_A).await.unwrap(), None);
        let many = $store
            .last_rotations([("ag_2", IMEI_B), ("ag_2", IMEI_A), ("ag_1", IMEI_A)])
            .await
            .unwrap();
        assert_eq!(
            many,
            [
                Some(at(2000, "198.51.100.4")),
                None,
                Some(at(1000, "198.51.100.3"))
            ]
        );
    }};
}

#[tokio::test]
async fn rotations_behave_alike() {
    on_both_backends!(rotations);
}

macro_rules! usage {
    ($store:ident) => {{
        $store.has_modem("ag_1", IMEI_A, 10).await;
        $store
            .insert_allocation(&allocation("al_1", "default", "o-1", "ag_1", IMEI_A))
            .await
            .unwrap();
        let report = |at: u64, entries: &[(&str, u64, u64)]| UsageReport {
            measured_at_ms: at,
            allocations: entries
                .iter()
                .map(|(id, i, o)| AllocationUsage {
                    allocation_id: id.to_string(),
                    bytes_in: *i,
                    bytes_out: *o,
                })
                .collect(),
        };
        let got = $store
            .record_usage_report(
                "ag_1",
                &report(5000, &[("al_1", 100, 50), ("al_zz", 1, 1)]),
                4000,
            )
            .await
            .unwrap();
        assert_eq!((got.stored, got.ignored), (1, 1));
        let stranger = $store
            .record_usage_report("ag_2", &report(4000, &[("al_1", 1_000_000, 1)]), 9000)
            .await
            .unwrap();
        assert_eq!(
            (stranger.stored, stranger.ignored),
            (0, 1),
            "not its allocation"
        );
        // A lower report never lowers a total; the time is clamped to the plane's clock.
        $store
            .record_usage_report("ag_1", &report(3000, &[("al_1", 90, 70)]), 9000)
            .await
            .unwrap();
        let totals = UsageTotals {
            bytes_in: 100,
            bytes_out: 70,
            measured_at_ms: 4000,
        };
        assert_eq!($store.usage("al_1").await.unwrap(), Some(totals));
        // After a move, the new agent's totals add up with the old one's.
        $store
            .record_usage(
                "al_1",
                "ag_2",
                UsageTotals {
                    bytes_in: 1,
                    bytes_out: 2,
                    measured_at_ms: 6000,
                },
            )
            .await
            .unwrap();
        let sum = UsageTotals {
            bytes_in: 101,
            bytes_out: 72,
            measured_at_ms: 6000,
        };
        assert_eq!($store.usage("al_1").await.unwrap(), Some(sum));
        assert_eq!($store.usage("al_zz").await.unwrap(), None);
        // A page's worth at once: the same totals, nothing for one without usage.
        let page = $store
            .usages(&["al_1".to_string(), "al_zz".to_string()])
            .await
            .unwrap();
        assert_eq!(page.len(), 1, "{page:?}");
        assert_eq!(page.get("al_1"), Some(&sum));
    }};
}

#[tokio::test]
async fn usage_behaves_alike() {
    on_both_backends!(usage);
}

const DAY_MS: u64 = 86_400_000;

macro_rules! usage_days {
    ($store:ident) => {{
        let t = now();
        let token = TokenRecord {
            label: "rack".into(),
            created_at: t,
            expires_at: t + Duration::days(1),
            used: false,
            agent_id: None,
        };
        $store
            .insert_enrollment_token("et_1", &token)
            .await
            .unwrap();
        $store.enroll("et_1", agent("ag_1"), t).await.unwrap();
        $store.has_modem("ag_1", IMEI_A, 10).await;
        $store
            .insert_allocation(&allocation("al_1", "default", "o-1", "ag_1", IMEI_A))
            .await
            .unwrap();
        let report = |at: u64, i: u64, o: u64| UsageReport {
            measured_at_ms: at,
            allocations: vec![AllocationUsage {
                allocation_id: "al_1".into(),
                bytes_in: i,
                bytes_out: o,
            }],
        };
        let now_ms = 100 * DAY_MS;
        // Day 10: 100 in, 10 out, in two reports; a lower report adds nothing; day 11: +50.
        for (at, i, o) in [(10, 60, 10), (10, 100, 10), (10, 90, 5), (11, 150, 10)] {
            let r = report(at * DAY_MS + 5, i, o);
            $store
                .record_usage_report("ag_1", &r, now_ms)
                .await
                .unwrap();
        }
        let days = $store
            .modem_days(&["ag_1".to_string()], 0, 100)
            .await
            .unwrap();
        let got: Vec<(i64, u64, u64)> = days
            .iter()
            .map(|d| (d.day, d.bytes_in, d.bytes_out))
            .collect();
        assert_eq!(got, [(10, 100, 10), (11, 50, 0)]);
        assert!(days
            .iter()
            .all(|d| d.agent_id == "ag_1" && d.imei == IMEI_A));
        // The days add up to the allocation's totals.
        let total = $store.usage("al_1").await.unwrap().unwrap();
        assert_eq!((total.bytes_in, total.bytes_out), (150, 10));
        assert_eq!(
            $store
                .modem_days(&["ag_1".to_string()], 11, 11)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!($store
            .modem_days(&["ag_2".to_string()], 0, 100)
            .await
            .unwrap()
            .is_empty());
        // Pruned by day.
        assert_eq!($store.prune_modem_days(11).await.unwrap(), 1);
        let left = $store
            .modem_days(&["ag_1".to_string()], 0, 100)
            .await
            .unwrap();
        assert_eq!(left.iter().map(|d| d.day).collect::<Vec<_>>(), [11]);
    }};
}

#[tokio::test]
async fn modem_usage_days_behave_alike() {
    on_both_backends!(usage_days);
}

fn endpoint(id: &str, tenant: Option<&str>) -> WebhookEndpoint {
    WebhookEndpoint {
        webhook_id: id.into(),
        url: format!("https://shop.example/{id}"),
        events: vec!["*".into()],
        secret_sealed: "sealed".into(),
        created_at: now(),
        tenant: tenant.map(str::to_string),
    }
}

fn delivery(seq: u64, webhook_id: &str, event_id: &str, due: OffsetDateTime) -> Delivery {
    Delivery {
        seq,
        webhook_id: webhook_id.into(),
        event_id: event_id.into(),
        event_type: "allocation.active".into(),
        state: DeliveryState::Pending,
        attempts: 0,
        created_at: due,
        next_attempt_at: Some(due),
        finished_at: None,
        last_status: None,
        last_error: None,
        body: format!(r#"{{"id":"{event_id}"}}"#),
    }
}

fn taken(lease: Lease) -> LeasedDelivery {
    match lease {
        Lease::Taken(leased) => *leased,
        other => panic!("nothing leased: {other:?}"),
    }
}

macro_rules! webhooks {
    ($store:ident) => {{
        let t0 = now();
        let ms = farmhand_control::ids::unix_ms;
        // Built once: two calls of `endpoint` may fall in different seconds.
        let wh_b = endpoint("wh_b", Some("acme"));
        $store.put_webhook_endpoint(&wh_b).await.unwrap();
        $store
            .put_webhook_endpoint(&endpoint("wh_a", None))
            .await
            .unwrap();
        let listed: Vec<String> = $store
            .webhook_endpoints()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.webhook_id)
            .collect();
        assert_eq!(listed, ["wh_a", "wh_b"]);
        assert_eq!($store.webhook_endpoint("wh_b").await.unwrap(), Some(wh_b));

        let mut seqs = Vec::new();
        for _ in 0..3 {
            seqs.push($store.next_delivery_seq().await.unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let e1 = delivery(seqs[0], "wh_a", "ev_1", t0);
        let e2 = delivery(seqs[1], "wh_a", "ev_2", t0 + Duration::seconds(10));
        let e3 = delivery(seqs[2], "wh_b", "ev_3", t0);
        $store
            .enqueue_deliveries(&[e1.clone(), e2.clone()])
            .await
            .unwrap();
        $store
            .enqueue_deliveries(std::slice::from_ref(&e3))
            .await
            .unwrap();
        assert_eq!($store.pending_webhook_deliveries().await.unwrap(), 3);
        assert_eq!($store.next_webhook_due().await.unwrap(), Some(ms(t0)));

        // Earliest due first; a lease hides a delivery until it runs out.
        let lease_end = ms(t0 + Duration::seconds(60));
        let first = taken(
            $store
                .lease_due_delivery(ms(t0), lease_end, 10, |_| true)
                .await
                .unwrap(),
        );
        assert_eq!(first.delivery, e1);
        let second = taken(
            $store
                .lease_due_delivery(ms(t0), lease_end, 10, |w| w != "wh_a")
                .await
                .unwrap(),
        );
        assert_eq!(second.delivery, e3);
        let none = $store
            .lease_due_delivery(ms(t0), lease_end, 10, |_| true)
            .await
            .unwrap();
        assert!(matches!(none, Lease::NothingDue), "{none:?}");
        let later = ms(t0 + Duration::seconds(10));
        let blocked = $store
            .lease_due_delivery(later, lease_end, 10, |_| false)
            .await
            .unwrap();
        assert!(matches!(blocked, Lease::Blocked), "{blocked:?}");

        // Settled: delivered leaves the schedule; a retry is due at its new time.
        let mut done = e1.clone();
        done.state = DeliveryState::Delivered;
        done.attempts = 1;
        done.next_attempt_at = None;
        done.finished_at = Some(t0 + Duration::seconds(1));
        done.last_status = Some(204);
        $store.settle_delivery(&first, &done).await.unwrap();
        let mut retry = e3.clone();
        retry.attempts = 1;
        retry.next_attempt_at = Some(t0 + Duration::seconds(5));
        retry.last_status = Some(503);
        retry.last_error = Some("503 Service Unavailable".into());
        $store.settle_delivery(&second, &retry).await.unwrap();
        assert_eq!(
            $store.next_webhook_due().await.unwrap(),
            Some(ms(t0 + Duration::seconds(5)))
        );
        assert_eq!($store.pending_webhook_deliveries().await.unwrap(), 2);
        assert_eq!(
            $store.webhook_deliveries("wh_a", 10).await.unwrap(),
            [e2.clone(), done]
        );
        assert_eq!(
            $store.webhook_deliveries("wh_a", 1).await.unwrap(),
            std::slice::from_ref(&e2)
        );
        assert_eq!(
            $store.webhook_deliveries("wh_b", 10).await.unwrap(),
            [retry]
        );

        // The log keeps the newest finished lines; pending ones always stay.
        assert_eq!($store.prune_webhook_deliveries("wh_a", 0).await.unwrap(), 1);
        assert_eq!($store.webhook_deliveries("wh_a", 10).await.unwrap(), [e2]);
        assert!($store.remove_webhook_endpoint("wh_b").await.unwrap());
        assert!(!$store.remove_webhook_endpoint("wh_b").await.unwrap());
        // (sled counts a removed endpoint's pending deliveries until the deliverer comes
        // to them; PostgreSQL drops them with the endpoint.)
        assert!($store
            .webhook_deliveries("wh_b", 10)
            .await
            .unwrap()
            .is_empty());

        assert_eq!($store.expiring_sent("al_1").await.unwrap(), None);
        $store.mark_expiring_sent("al_1", 123).await.unwrap();
        $store.mark_expiring_sent("al_1", 456).await.unwrap();
        assert_eq!($store.expiring_sent("al_1").await.unwrap(), Some(456));
        $store.forget_expiring("al_1").await.unwrap();
        assert_eq!($store.expiring_sent("al_1").await.unwrap(), None);
    }};
}

#[tokio::test]
async fn webhook_endpoints_and_deliveries_behave_alike() {
    on_both_backends!(webhooks);
}

/// Nodes claiming due deliveries at once each get a different one; a lease left by a node
/// that died runs out, and another node takes the delivery then.
#[tokio::test]
async fn each_delivery_is_claimed_by_one_node_and_a_dead_nodes_lease_runs_out() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = (postgres(&cluster).await, postgres(&cluster).await);
    let t0 = now();
    let ms = farmhand_control::ids::unix_ms;
    a.put_webhook_endpoint(&endpoint("wh_a", None))
        .await
        .unwrap();
    let mut all = Vec::new();
    for i in 0..20 {
        let seq = a.next_delivery_seq().await.unwrap();
        all.push(delivery(seq, "wh_a", &format!("ev_{i}"), t0));
    }
    a.enqueue_deliveries(&all).await.unwrap();
    a.enqueue_deliveries(&all[..3]).await.unwrap();
    assert_eq!(
        a.pending_webhook_deliveries().await.unwrap(),
        20,
        "an event once per endpoint"
    );

    let lease_end = ms(t0 + Duration::seconds(30));
    let claim = |store: PgStore| async move {
        let mut got = Vec::new();
        while let Lease::Taken(leased) = store
            .lease_due_delivery(ms(t0), lease_end, 100, |_| true)
            .await
            .unwrap()
        {
            got.push(leased.delivery.seq);
        }
        got
    };
    let (x, y) = tokio::join!(claim(a.clone()), claim(b.clone()));
    let mut claimed: Vec<u64> = x.iter().chain(&y).copied().collect();
    claimed.sort_unstable();
    let mut expected: Vec<u64> = all.iter().map(|d| d.seq).collect();
    expected.sort_unstable();
    assert_eq!(claimed, expected, "every delivery claimed exactly once");

    // Node a "dies" holding its leases: nothing comes back early, all come back at the end.
    assert_eq!(b.release_webhook_leases().await.unwrap(), 0);
    let early = b
        .lease_due_delivery(lease_end - 1, lease_end + 30_000, 100, |_| true)
        .await
        .unwrap();
    assert!(matches!(early, Lease::NothingDue), "{early:?}");
    assert_eq!(b.next_webhook_due().await.unwrap(), Some(lease_end));
    let again = b
        .lease_due_delivery(lease_end, lease_end + 30_000, 100, |_| true)
        .await
        .unwrap();
    assert!(matches!(again, Lease::Taken(_)));
}

macro_rules! retention {
    ($store:ident) => {{
        use farmhand_control::store::RetentionKind as Kind;
        let t = now();
        let due = |kind| $store.retention_due(kind, t, 10);
        $store.has_modem("ag_1", IMEI_A, 10).await;
        let mut ended = allocation("al_1", "default", "o-1", "ag_1", IMEI_A);
        $store.insert_allocation(&ended).await.unwrap();
        assert_eq!(
            $store.retention_queued(Kind::Credentials).await.unwrap(),
            0,
            "live"
        );
        ended.state = AllocationState::Released;
        ended.released_at = Some(t);
        $store.save_allocation(&ended).await.unwrap();
        $store
            .record_usage(
                "al_1",
                "ag_1",
                UsageTotals {
                    bytes_in: 1,
                    bytes_out: 1,
                    measured_at_ms: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            $store.oldest_queued(Kind::Credentials).await.unwrap(),
            Some(t)
        );
        let early = $store
            .retention_due(Kind::Credentials, t - Duration::seconds(1), 10)
            .await;
        assert!(
            early.unwrap().is_empty(),
            "a second before its window ends it stays"
        );

        // Credentials, then detail, then the record: each window queues the next.
        for (kind, next) in [
            (Kind::Credentials, Some(Kind::AllocationDetail)),
            (Kind::AllocationDetail, Some(Kind::AllocationRecord)),
            (Kind::AllocationRecord, None),
        ] {
            let queued = due(kind).await.unwrap();
            assert_eq!(queued.len(), 1, "{kind:?}");
            assert_eq!(
                (queued[0].record.as_slice(), queued[0].started),
                (&b"al_1"[..], t)
            );
            assert!(
                $store.forget(kind, &queued[0], t).await.unwrap(),
                "{kind:?}"
            );
            assert!(
                !$store.forget(kind, &queued[0], t).await.unwrap(),
                "{kind:?} twice"
            );
            $store.retention_next(kind, &queued[0]).await.unwrap();
            $store.retention_done(&queued[0]).await.unwrap();
            assert_eq!($store.retention_queued(kind).await.unwrap(), 0, "{kind:?}");
            if let Some(next) = next {
                assert_eq!($store.retention_queued(next).await.unwrap(), 1, "{next:?}");
            }
            match $store.allocation("al_1").await.unwrap() {
                Some(left) if kind == Kind::Credentials => {
                    assert_eq!(
                        (left.password_sealed, left.login.as_str()),
                        (None, "u_al_1")
                    );
                }
                Some(left) => {
                    assert!(left.detail_purged && left.imei.is_empty() && left.login.is_empty());
                    assert_eq!(left.order_id, "o-1", "the financial core stays");
                }
                None => {
                    assert_eq!(kind, Kind::AllocationRecord);
                    assert_eq!($store.usage("al_1").await.unwrap(), None);
                }
            }
        }

        // A rotation goes unless a later one replaced it.
        let rotation = |ms| RotationRecord {
            at_ms: ms,
            old_ip: None,
            new_ip: Some("198.51.100.2".into()),
            changed: true,
            automatic: true,
        };
        let t_ms = farmhand_control::ids::unix_ms(t);
        $store
            .record_rotation("ag_1", IMEI_A, &rotation(t_ms - 1000))
            .await
            .unwrap();
        $store
            .record_rotation("ag_1", IMEI_A, &rotation(t_ms))
            .await
            .unwrap();
        let queued = due(Kind::Rotation).await.unwrap();
        assert_eq!(queued.len(), 2);
        assert!(
            !$store.forget(Kind::Rotation, &queued[0], t).await.unwrap(),
            "replaced"
        );
        assert!($store.forget(Kind::Rotation, &queued[1], t).await.unwrap());
        assert_eq!($store.last_rotation("ag_1", IMEI_A).await.unwrap(), None);

        // A pending delivery waits another window; a finished one goes.
        $store
            .put_webhook_endpoint(&endpoint("wh_a", None))
            .await
            .unwrap();
        let seq = $store.next_delivery_seq().await.unwrap();
        let pending = delivery(seq, "wh_a", "ev_1", t - Duration::days(1));
        $store
            .enqueue_deliveries(std::slice::from_ref(&pending))
            .await
            .unwrap();
        let queued = due(Kind::WebhookDelivery).await.unwrap();
        assert!(!$store
            .forget(Kind::WebhookDelivery, &queued[0], t)
            .await
            .unwrap());
        $store.retention_done(&queued[0]).await.unwrap();
        assert_eq!(
            $store.oldest_queued(Kind::WebhookDelivery).await.unwrap(),
            Some(t)
        );
        let now_ms = farmhand_control::ids::unix_ms(t);
        let leased = taken(
            $store
                .lease_due_delivery(now_ms, now_ms + 1000, 10, |_| true)
                .await
                .unwrap(),
        );
        let mut done = pending.clone();
        done.state = DeliveryState::Delivered;
        done.next_attempt_at = None;
        $store.settle_delivery(&leased, &done).await.unwrap();
        let queued = due(Kind::WebhookDelivery).await.unwrap();
        assert!($store
            .forget(Kind::WebhookDelivery, &queued[0], t)
            .await
            .unwrap());
        assert!($store
            .webhook_deliveries("wh_a", 10)
            .await
            .unwrap()
            .is_empty());

        // A token is counted from its expiry.
        let token = TokenRecord {
            label: "rack".into(),
            created_at: t - Duration::days(2),
            expires_at: t,
            used: false,
            agent_id: None,
        };
        $store
            .insert_enrollment_token("et_old", &token)
            .await
            .unwrap();
        let before = $store.enrollment_tokens().await.unwrap().len();
        let queued = due(Kind::EnrollmentToken).await.unwrap();
        let ours = queued.iter().find(|q| q.started == t).unwrap();
        assert!($store.forget(Kind::EnrollmentToken, ours, t).await.unwrap());
        assert_eq!($store.enrollment_tokens().await.unwrap().len(), before - 1);
    }};
}

#[tokio::test]
async fn retention_behaves_alike() {
    on_both_backends!(retention);
}

macro_rules! seller {
    ($store:ident) => {{
        let t = now();
        let record = TokenRecord {
            label: "rack".into(),
            created_at: t,
            expires_at: t + Duration::days(1),
            used: false,
            agent_id: None,
        };
        for (token, id) in [("et_1", "ag_gone"), ("et_2", "ag_stays")] {
            $store.insert_enrollment_token(token, &record).await.unwrap();
            $store.enroll(token, agent(id), t).await.unwrap();
        }
        $store.has_modem("ag_gone", IMEI_A, 10).await;
        let mut sold = allocation("al_1", "default", "o-1", "ag_gone", IMEI_A);
        sold.state = AllocationState::Active;
        $store.insert_allocation(&sold).await.unwrap();
        let totals = UsageTotals { bytes_in: 10, bytes_out: 20, measured_at_ms: 30 };
        let report = UsageReport {
            measured_at_ms: 30,
            allocations: vec![AllocationUsage { allocation_id: "al_1".into(), bytes_in: 10, bytes_out: 20 }],
        };
        $store.record_usage_report("ag_gone", &report, 1_000).await.unwrap();
        let rotation = RotationRecord {
            at_ms: 1,
            old_ip: None,
            new_ip: Some("198.51.100.2".into()),
            changed: true,
            automatic: false,
        };
        $store.record_rotation("ag_gone", IMEI_A, &rotation).await.unwrap();
        $store.set_modem_owner(IMEI_A, "ag_gone").await.unwrap();
        $store.put_pending_command(&release("ag_gone", "c1", 9_999_999_999_999)).await.unwrap();
        let event = |actor: &str, target: String, details| AuditEvent {
            at: t,
            actor: actor.into(),
            action: AuditAction::IpRotated,
            target,
            details,
        };
        for e in [
            event("agent:ag_gone", "modem:x".into(), json!({})),
            event("admin:ops", "agent:ag_gone".into(), json!({})),
            event("system", format!("modem:{IMEI_A}"), json!({"by": "ag_gone"})),
            event("system", format!("modem:{IMEI_A}"), json!({})),
            event("system", "agent:ag_stays".into(), json!({})),
        ] {
            $store.append_audit(&e).await.unwrap();
        }
        $store.put_webhook_endpoint(&endpoint("wh_a", None)).await.unwrap();
        let (s1, s2) = ($store.next_delivery_seq().await.unwrap(), $store.next_delivery_seq().await.unwrap());
        let mut sent = delivery(s1, "wh_a", "ev_1", t);
        sent.body = r#"{"agent_id":"ag_gone"}"#.into();
        let mut waiting = delivery(s2, "wh_a", "ev_2", t + Duration::days(1));
        waiting.body = sent.body.clone();
        $store.enqueue_deliveries(&[sent.clone(), waiting]).await.unwrap();
        let leased = taken($store.lease_due_delivery(farmhand_control::ids::unix_ms(t), u64::MAX / 2, 10, |_| true).await.unwrap());
        sent.state = DeliveryState::Delivered;
        $store.settle_delivery(&leased, &sent).await.unwrap();

        let probed = track("ag_gone", IMEI_A);
        assert!($store.save_probe_track("al_1", &probed).await.unwrap());
        let hour = quality_hour(3);
        $store.add_quality(&[("ag_gone".into(), 7, hour.clone())]).await.unwrap();

        let found = $store.seller_records("ag_gone").await.unwrap().unwrap();
        assert_eq!(found.probes, [("al_1".to_string(), probed)]);
        assert_eq!(found.quality, [("ag_gone".to_string(), 7, hour)]);
        let days: Vec<(i64, u64, u64)> = found.usage_days.iter().map(|d| (d.day, d.bytes_in, d.bytes_out)).collect();
        assert_eq!(days, [(0, 10, 20)]);
        assert_eq!(ids(&found.allocations), ["al_1"]);
        assert_eq!(found.usage, [("al_1".to_string(), totals)]);
        assert_eq!(found.rotations, [(IMEI_A.to_string(), rotation)]);
        assert_eq!(found.modem_owners, [IMEI_A]);
        assert_eq!(found.pending_commands.len(), 1);
        let audited: Vec<&str> = found.audit.iter().map(|e| e.event.actor.as_str()).collect();
        assert_eq!(audited, ["agent:ag_gone", "admin:ops", "system"]);
        assert!($store.seller_records("ag_nobody").await.unwrap().is_none());

        let refused = $store.erase_seller("ag_gone", "ag_erased_1").await.unwrap_err();
        assert!(matches!(refused, EraseError::Live(ref id) if id == "al_1"), "{refused}");
        let mut ended = $store.allocation("al_1").await.unwrap().unwrap();
        ended.state = AllocationState::Released;
        ended.released_at = Some(t);
        $store.save_allocation(&ended).await.unwrap();
        let erased = $store.erase_seller("ag_gone", "ag_erased_1").await.unwrap();
        assert_eq!(
            (
                erased.allocations_tombstoned,
                erased.usage_tombstoned,
                erased.rotations_deleted,
                erased.modem_owners_deleted,
                erased.commands_deleted,
                erased.tokens_deleted,
                erased.audit_rewritten,
                erased.deliveries_scrubbed,
                erased.probes_deleted,
                erased.quality_hours_deleted,
                erased.usage_days_deleted
            ),
            (1, 1, 1, 1, 1, 1, 4, 1, 1, 1, 1)
        );
        assert_eq!($store.probe_track("al_1").await.unwrap(), None);
        assert_eq!($store.agent("ag_gone").await.unwrap(), None);
        let kept = $store.allocation("al_1").await.unwrap().unwrap();
        assert_eq!((kept.agent_id.as_str(), kept.imei.as_str()), ("ag_erased_1", ""));
        assert_eq!($store.usage("al_1").await.unwrap(), Some(totals), "the books stay whole");
        assert_eq!($store.last_rotation("ag_gone", IMEI_A).await.unwrap(), None);
        assert!($store.modem_owners().await.unwrap().is_empty());
        assert!($store.pending_commands("ag_gone").await.unwrap().is_empty());
        let log = $store.audit_since(t, 100).await.unwrap();
        assert!(log.iter().all(|e| !e.actor.contains("ag_gone") && !e.target.contains(IMEI_A)), "{log:?}");
        assert_eq!(log.iter().filter(|e| e.target == "agent:ag_stays").count(), 1);
        let bodies: Vec<String> =
            $store.webhook_deliveries("wh_a", 10).await.unwrap().into_iter().map(|d| d.body).collect();
        assert_eq!(bodies, [r#"{"agent_id":"ag_gone"}"#, r#"{"erased":true}"#], "pending kept, sent scrubbed");
        assert!($store.agent("ag_stays").await.unwrap().is_some());
        // Only the pending delivery, owed to the marketplace, still names the agent.
        assert_eq!($store.tables_containing(b"ag_gone").await.unwrap(), ["webhook_deliveries"]);
        assert!($store.tables_containing(IMEI_A.as_bytes()).await.unwrap().is_empty());
        let tables = $store.table_names().await.unwrap();
        assert!(tables.iter().any(|t| t == "allocations"), "{tables:?}");
    }};
}

fn track(agent_id: &str, imei: &str) -> ProbeTrack {
    ProbeTrack {
        agent_id: agent_id.into(),
        imei: imei.into(),
        failures_in_a_row: 2,
        degraded: Some("ip_mismatch".into()),
        results: [ProbeRecord {
            at: now(),
            failure: Some("ip_mismatch".into()),
            protocol: Some("http".into()),
            connect_ms: Some(3),
            first_byte_ms: Some(40),
            egress_ip: Some("198.51.100.7".into()),
            modem_ip: Some("198.51.100.4".into()),
            node: "nd_a".into(),
        }]
        .into(),
    }
}

fn quality_hour(n: u64) -> QualityHour {
    let mut latency = [0; LATENCY_BUCKETS];
    latency[2] = n;
    latency[LATENCY_BUCKETS - 1] = 1;
    QualityHour {
        probes: n + 1,
        probes_ok: n,
        latency,
        rotations: 2,
        rotations_changed: 1,
        rotations_timed: 1,
        rotation_ms_total: 4_000,
        replacements: 1,
    }
}

macro_rules! probes {
    ($store:ident) => {{
        let t = now();
        let token = TokenRecord {
            label: "rack".into(),
            created_at: t,
            expires_at: t + Duration::days(1),
            used: false,
            agent_id: None,
        };
        for (secret, id) in [("et_1", "ag_1"), ("et_2", "ag_2")] {
            $store
                .insert_enrollment_token(secret, &token)
                .await
                .unwrap();
            $store.enroll(secret, agent(id), t).await.unwrap();
        }
        $store.has_modem("ag_1", IMEI_A, 10).await;
        let mut live = allocation("al_1", "default", "o-1", "ag_1", IMEI_A);
        live.state = AllocationState::Active;
        $store.insert_allocation(&live).await.unwrap();

        // A probe record is kept per allocation, replaced by the next, and only for an
        // allocation the store keeps.
        assert_eq!($store.probe_track("al_1").await.unwrap(), None);
        let mut first = track("ag_1", IMEI_A);
        assert!($store.save_probe_track("al_1", &first).await.unwrap());
        first.failures_in_a_row = 3;
        assert!($store.save_probe_track("al_1", &first).await.unwrap());
        assert_eq!(
            $store.probe_track("al_1").await.unwrap(),
            Some(first.clone())
        );
        assert!(!$store.save_probe_track("al_nope", &first).await.unwrap());
        assert_eq!($store.probe_track("al_nope").await.unwrap(), None);
        let page = $store
            .probe_tracks(&["al_1".to_string(), "al_nope".to_string()])
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page.get("al_1"), Some(&first));

        // Quality hours add up, whoever adds them; an agent not enrolled gets none.
        let written = $store
            .add_quality(&[
                ("ag_1".into(), 10, quality_hour(2)),
                ("ag_1".into(), 11, quality_hour(1)),
                ("ag_2".into(), 11, quality_hour(5)),
                ("ag_nope".into(), 11, quality_hour(5)),
            ])
            .await
            .unwrap();
        assert_eq!(written, 3);
        $store
            .add_quality(&[("ag_1".into(), 11, quality_hour(4))])
            .await
            .unwrap();
        let mut both = quality_hour(1);
        both.add(&quality_hour(4));
        assert_eq!(both.latency[2], 5);
        let mut ag_1 = $store
            .quality_hours(Some(&["ag_1".to_string()]), 11)
            .await
            .unwrap();
        ag_1.sort_by_key(|(_, hour, _)| *hour);
        assert_eq!(ag_1, [("ag_1".to_string(), 11, both.clone())]);
        let mut every = $store.quality_hours(None, 0).await.unwrap();
        every.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let agents: Vec<(&str, i64)> = every.iter().map(|(a, h, _)| (a.as_str(), *h)).collect();
        assert_eq!(agents, [("ag_1", 10), ("ag_1", 11), ("ag_2", 11)]);
        assert_eq!($store.prune_quality(11).await.unwrap(), 1);
        assert_eq!($store.quality_hours(None, 0).await.unwrap().len(), 2);

        // The record goes with the allocation's detail.
        let mut ended = $store.allocation("al_1").await.unwrap().unwrap();
        ended.state = AllocationState::Released;
        ended.released_at = Some(t);
        $store.save_allocation(&ended).await.unwrap();
        assert!(
            $store.probe_track("al_1").await.unwrap().is_some(),
            "kept after the end"
        );
        {
            use farmhand_control::store::RetentionKind as Kind;
            for kind in [Kind::Credentials, Kind::AllocationDetail] {
                let queued = $store.retention_due(kind, t, 10).await.unwrap();
                assert!(
                    $store.forget(kind, &queued[0], t).await.unwrap(),
                    "{kind:?}"
                );
                $store.retention_next(kind, &queued[0]).await.unwrap();
                $store.retention_done(&queued[0]).await.unwrap();
                let kept = $store.probe_track("al_1").await.unwrap();
                assert_eq!(kept.is_some(), kind == Kind::Credentials, "{kind:?}");
            }
        }
        assert_eq!($store.probe_track("al_1").await.unwrap(), None);
        assert!(
            !$store.save_probe_track("al_1", &first).await.unwrap(),
            "detail purged"
        );
        assert_eq!($store.probe_track("al_1").await.unwrap(), None);
        assert!($store
            .tables_containing(b"198.51.100.7")
            .await
            .unwrap()
            .is_empty());
    }};
}

#[tokio::test]
async fn probe_records_and_quality_hours_behave_alike() {
    on_both_backends!(probes);
}

#[tokio::test]
async fn seller_export_and_erasure_behave_alike() {
    on_both_backends!(seller);
}

/// A session claimed on one node and then on another: the newer claim wins (a higher
/// epoch), the first node's renewal no longer lists it, and its late `end_session` does not
/// remove the newer one.
#[tokio::test]
async fn the_newest_session_wins_and_the_old_node_learns_it_at_renewal() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let store = postgres(&cluster).await;
    let lease = std::time::Duration::from_secs(15);
    let first = store.claim_session("ag_1", "nd_a", lease).await.unwrap();
    assert_eq!(
        store.renew_sessions("nd_a", lease).await.unwrap(),
        [("ag_1".to_string(), first)]
    );
    assert_eq!(
        store.session_holder("ag_1").await.unwrap().as_deref(),
        Some("nd_a")
    );
    let second = store.claim_session("ag_1", "nd_b", lease).await.unwrap();
    assert!(second > first, "{second} > {first}");
    assert!(
        store
            .renew_sessions("nd_a", lease)
            .await
            .unwrap()
            .is_empty(),
        "taken over"
    );
    assert_eq!(
        store.renew_sessions("nd_b", lease).await.unwrap(),
        [("ag_1".to_string(), second)]
    );
    store.end_session("ag_1", "nd_a", first).await.unwrap();
    assert_eq!(
        store.session_holder("ag_1").await.unwrap().as_deref(),
        Some("nd_b")
    );
    // A lease that ran out names no holder.
    store
        .claim_session("ag_2", "nd_a", std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(store.session_holder("ag_2").await.unwrap(), None);
    store.leave("nd_b").await.unwrap();
    assert_eq!(store.session_holder("ag_1").await.unwrap(), None);
}

/// A node keeps the keys that authenticated (`store/pg/store/cache.rs`), so the check
/// after each request must not trust that copy: with no notification reaching it at all
/// (no listener here), a node whose copy still holds a key revoked on another node answers
/// that the key no longer exists.
#[tokio::test]
async fn a_revoked_key_is_gone_for_the_recheck_even_where_a_copy_is_kept() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let here = postgres(&cluster).await;
    let config = StoreConfig::postgres(&cluster.url, PgTls::Disable);
    let elsewhere = PgStore::new(pg::pool(&config).unwrap());
    let now = OffsetDateTime::now_utc();
    let record = ApiKeyRecord {
        role: Role::Marketplace,
        name: "shop".into(),
        created_at: now,
        tenant: None,
        seller: None,
        expires_at: None,
    };
    let id = elsewhere.insert_api_key("fh_k1", &record).await.unwrap();
    assert!(here.find_api_key("fh_k1", now).await.unwrap().is_some());
    elsewhere.revoke_api_key(&id).await.unwrap().unwrap();
    // This node's copy (fresh for a second, and no notification came) still holds the
    // key: the recheck must read past it.
    assert!(!here.api_key_exists(&id).await.unwrap());
}
