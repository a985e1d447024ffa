//! The postgres backend (`pg::PgStore`) against the sled one (`Store`, the default), on
//! the same scenarios: each scenario is a macro run once on each backend, so both must
//! answer alike — keys, enrollment tokens and enrollment (also two nodes racing for one
//! token), agents and modem owners, the command outbox, the audit log. PostgreSQL is a
//! real throw-away cluster (`initdb`); skipped with a printed reason when none is
//! installed, never in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_control::config::{Backend, PgTls, StoreConfig};
use farmhand_control::pg::{self, migrations, PgStore};
use farmhand_control::store::{
    AgentRecord, ApiKeyRecord, AuditAction, AuditEvent, EnrollError, PendingCommand, Role,
    TokenRecord,
};
use farmhand_control::Store;
use farmhand_protocol::{Command, CommandBody, Release};
use farmhand_test_support::postgres::PgCluster;
use serde_json::json;
use time::{Duration, OffsetDateTime};

/// A migrated, empty database on `cluster`.
async fn postgres(cluster: &PgCluster) -> PgStore {
    let config = StoreConfig {
        backend: Backend::Postgres,
        url: Some(cluster.url.clone()),
        tls: PgTls::Disable,
        ..StoreConfig::default()
    };
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
            let pg = postgres(&cluster).await;
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
            expires_at: Some(t0 + Duration::hours(1)),
        };
        let ops = ApiKeyRecord {
            role: Role::Admin,
            name: "ops".into(),
            created_at: t0,
            tenant: None,
            expires_at: None,
        };
        let shop_id = $store.insert_api_key("fh_shop", &shop).await.unwrap();
        let ops_id = $store.insert_api_key("fh_ops", &ops).await.unwrap();
        assert!(shop_id.starts_with("key_") && shop_id != ops_id);

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
    }};
}

#[tokio::test]
async fn the_audit_log_behaves_alike() {
    on_both_backends!(audit);
}
