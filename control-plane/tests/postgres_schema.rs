//! The postgres backend's schema on a real, throw-away PostgreSQL (`initdb` in a temp dir;
//! skipped with a printed reason when PostgreSQL is not installed, never in CI): migrations
//! apply once even when nodes race, a database from another release is refused, the
//! constraints carry the allocation invariants (one live allocation per order, no shared
//! port, capacity never exceeded — also when two transactions race for the last slot), TLS
//! is verified, and `farmhand-control migrate` (and `keys`) work on it from the command
//! line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_control::config::{PgTls, StoreConfig};
use farmhand_control::store::pg::{self, migrations};
use farmhand_test_support::postgres::PgCluster;
use tokio_postgres::error::SqlState;

fn store(cluster: &PgCluster) -> StoreConfig {
    StoreConfig::postgres(&cluster.url, PgTls::Disable)
}

#[tokio::test]
async fn migrations_apply_once_even_when_nodes_race_and_other_releases_are_refused() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = (
        pg::pool(&store(&cluster)).unwrap(),
        pg::pool(&store(&cluster)).unwrap(),
    );
    assert_eq!(migrations::schema_version(&a).await.unwrap(), 0);
    let (ra, rb) = tokio::join!(migrations::migrate(&a), migrations::migrate(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let latest = migrations::latest();
    assert_eq!(ra.to, latest);
    assert_eq!(rb.to, latest);
    assert!(ra.from == 0 || rb.from == 0, "one of them applied it");
    assert!(
        ra.from == latest || rb.from == latest,
        "the other found it done"
    );
    assert_eq!(migrations::schema_version(&a).await.unwrap(), latest);
    let again = migrations::migrate(&a).await.unwrap();
    assert_eq!((again.from, again.to), (latest, latest));

    let client = a.get().await.unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, i64::from(latest));
    // A text that differs from this release's under a known version is refused…
    client
        .execute(
            "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let e = migrations::migrate(&a).await.unwrap_err().to_string();
    assert!(e.contains("differs"), "{e}");
    // …and so is a database a newer release migrated.
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'f')",
            &[],
        )
        .await
        .unwrap();
    let e = migrations::migrate(&a).await.unwrap_err().to_string();
    assert!(e.contains("newer than this binary"), "{e}");
}

/// Inserts an allocation row; the error's SQL state and constraint when refused.
async fn insert(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
    order: &str,
    imei: &str,
    port: i32,
) -> Result<(), (SqlState, String)> {
    client
        .execute(
            "INSERT INTO allocations (allocation_id, tenant, order_id, state, agent_id, imei,
                 http_port, socks_port, created_at, expires_at, record)
             VALUES ($1, 'default', $2, 'active', 'ag1', $3, $4, $4 + 1000, now(),
                 now() + interval '1 day', '{}')",
            &[&id, &order, &imei, &port],
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            let db = e.as_db_error().expect("a database error");
            (
                db.code().clone(),
                db.constraint().unwrap_or_default().to_string(),
            )
        })
}

#[tokio::test]
async fn the_constraints_carry_the_allocation_invariants() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let pool = pg::pool(&store(&cluster)).unwrap();
    migrations::migrate(&pool).await.unwrap();
    let mut client = pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO agents (agent_id, public_key, label, hostname, enrolled_at)
                 VALUES ('ag1', decode(repeat('00', 32), 'hex'), 'l', 'h', now());
             INSERT INTO modems (agent_id, imei, capacity, view, updated_at) VALUES
                 ('ag1', 'm1', 1, '{}', now()), ('ag1', 'm2', 2, '{}', now()),
                 ('ag1', 'm3', 1, '{}', now());",
        )
        .await
        .unwrap();
    insert(&**client, "a1", "o1", "m1", 8001).await.unwrap();
    // Capacity: m1 holds one.
    let (code, constraint) = insert(&**client, "a2", "o2", "m1", 8002).await.unwrap_err();
    assert_eq!(
        (code, constraint.as_str()),
        (SqlState::CHECK_VIOLATION, "allocations_capacity")
    );
    // One live allocation per order id.
    let (code, constraint) = insert(&**client, "a3", "o1", "m2", 8003).await.unwrap_err();
    assert_eq!(code, SqlState::UNIQUE_VIOLATION);
    assert_eq!(constraint, "allocations_one_per_order");
    // No two live allocations on one port of a box.
    let (code, constraint) = insert(&**client, "a4", "o4", "m2", 8001).await.unwrap_err();
    assert_eq!(code, SqlState::UNIQUE_VIOLATION);
    assert_eq!(constraint, "allocations_http_port_once");
    // A failed attempt frees its order id and its slot; an ended one must say when.
    client
        .execute(
            "UPDATE allocations SET state = 'failed', ended_at = now() WHERE allocation_id = 'a1'",
            &[],
        )
        .await
        .unwrap();
    insert(&**client, "a5", "o1", "m1", 8001).await.unwrap();
    let e = client
        .execute(
            "UPDATE allocations SET state = 'released' WHERE allocation_id = 'a5'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION));

    // Two transactions race for m3's only slot: exactly one wins, whatever the timing.
    let mut other = pool.get().await.unwrap();
    let first = client.transaction().await.unwrap();
    insert(&*first, "r1", "race-1", "m3", 9001).await.unwrap();
    let second = other.transaction().await.unwrap();
    let racing = insert(&*second, "r2", "race-2", "m3", 9002);
    let (committed, lost) = tokio::join!(first.commit(), racing);
    committed.unwrap();
    let (code, constraint) = lost.unwrap_err();
    assert_eq!(
        (code, constraint.as_str()),
        (SqlState::CHECK_VIOLATION, "allocations_capacity")
    );
}

#[tokio::test]
async fn tls_is_verified_against_the_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let files =
        farmhand_control::tls::write_self_signed(certs.path(), &["127.0.0.1".into()]).unwrap();
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    // The server's copy of the key, owned by the cluster's user (PostgreSQL insists).
    let data = cluster.data_dir();
    std::fs::copy(&files.cert_file, data.join("server.crt")).unwrap();
    std::fs::copy(&files.key_file, data.join("server.key")).unwrap();
    cluster.hand_over(&data.join("server.crt"));
    cluster.hand_over(&data.join("server.key"));
    std::fs::write(
        data.join("postgresql.auto.conf"),
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
    )
    .unwrap();
    cluster.hand_over(&data.join("postgresql.auto.conf"));
    cluster.restart();

    let verified = StoreConfig {
        tls: PgTls::VerifyFull,
        ca_file: Some(files.cert_file.clone()),
        ..store(&cluster)
    };
    let pool = pg::connect(&verified).await.unwrap();
    let client = pool.get().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is not encrypted");
    // Without the CA, the same server is not trusted.
    let unverified = StoreConfig {
        tls: PgTls::VerifyFull,
        ..store(&cluster)
    };
    let e = pg::connect(&unverified).await.unwrap_err().to_string();
    assert!(!e.is_empty());
}

#[test]
fn migrate_runs_from_the_command_line_and_serve_keeps_the_url_secret() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_farmhand-control");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .env("FARMHAND_STORE_BACKEND", "postgres")
            .env("FARMHAND_STORE_URL", &cluster.url)
            .env("FARMHAND_STORE_TLS", "disable")
            .output()
            .unwrap()
    };
    // Before: pending (exit 1); after: up to date (exit 0).
    let out = run(&["migrate", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations pending"));
    let out = run(&["migrate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("schema version 0 → {}", migrations::latest())),
        "{stdout}"
    );
    let out = run(&["migrate"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    let out = run(&["migrate", "--check"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "schema version {0}; this release's {0}",
        migrations::latest()
    );
    assert!(stdout.contains(&expected), "{stdout}");
    // Keys are managed on the database itself (no plane needs to run, none is in the way).
    let keys_dir = tempfile::tempdir().unwrap();
    let dir_arg = keys_dir.path().to_str().unwrap();
    let out = run(&[
        "keys",
        "create",
        "--role",
        "admin",
        "--name",
        "ops",
        "--data-dir",
        dir_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("fh_"), "{key}");
    let listed = run(&["keys", "list", "--data-dir", dir_arg]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let line = listed
        .lines()
        .find(|l| l.contains("\tops\t"))
        .unwrap_or_else(|| panic!("{listed}"));
    let key_id = line.split('\t').next().unwrap();
    let out = run(&["keys", "revoke", key_id, "--data-dir", dir_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = run(&["keys", "list", "--data-dir", dir_arg]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(key_id));
    assert!(!keys_dir.path().join("db").exists(), "nothing went to sled");

    // A database that cannot be reached stops `serve` at once, without its URL (a secret)
    // in the message.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("FARMHAND_STORE_BACKEND", "postgres")
        .env(
            "FARMHAND_STORE_URL",
            "postgres://farmhand:s3cret-pw@127.0.0.1:1/postgres",
        )
        .env("FARMHAND_STORE_TLS", "disable")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres"), "{err}");
    assert!(!err.contains("s3cret-pw"), "the URL is a secret: {err}");
}
