//! A throw-away PostgreSQL cluster for tests: `initdb` in a temp dir, started with
//! `pg_ctl` on a free loopback port, stopped and deleted on drop. PostgreSQL refuses to run
//! as root, so as root the cluster belongs to an unprivileged user (`postgres` when the
//! package created it, else `nobody`) and is driven through `runuser`.
//!
//! Without PostgreSQL installed, [`PgCluster::start`] returns `None` after printing why —
//! unless `FARMHAND_REQUIRE_POSTGRES=1` (CI sets it), when it panics: in CI those tests must
//! run, never be skipped silently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PgCluster {
    /// `postgres://farmhand@127.0.0.1:PORT/postgres` (trust authentication, no TLS).
    pub url: String,
    /// The port it listens on (127.0.0.1 only).
    pub port: u16,
    bin: PathBuf,
    owner: Option<String>,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl PgCluster {
    /// Starts a cluster, or `None` (with the reason printed) when PostgreSQL is not
    /// installed and `FARMHAND_REQUIRE_POSTGRES` is not `1`.
    pub fn start() -> Option<PgCluster> {
        Self::start_with(&[])
    }

    /// [`PgCluster::start`] with extra `-c name=value` server settings.
    pub fn start_with(settings: &[&str]) -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            let reason = "no PostgreSQL found (initdb in PATH or /usr/lib/postgresql/*/bin): \
                          install the postgresql package";
            assert!(
                std::env::var("FARMHAND_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{reason} (FARMHAND_REQUIRE_POSTGRES=1)"
            );
            eprintln!("SKIPPED: {reason}");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("farmhand-pg")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let owner = is_root().then(unprivileged_user);
        let data = dir.path().join("data");
        if let Some(user) = &owner {
            chown(dir.path(), user);
        }
        let mut cluster = PgCluster {
            url: String::new(),
            port: 0,
            bin,
            owner,
            data,
            _dir: dir,
        };
        let data_arg = cluster.data.display().to_string();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data_arg,
                "-A",
                "trust",
                "-U",
                "farmhand",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.port = free_port();
        let socket_dir = cluster._dir.path().display().to_string();
        let mut options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.port
        );
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = cluster._dir.path().join("server.log").display().to_string();
        cluster.run(
            "pg_ctl",
            &[
                "-D", &data_arg, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        );
        cluster.url = format!("postgres://farmhand@127.0.0.1:{}/postgres", cluster.port);
        Some(cluster)
    }

    /// The data directory (for tests that write server files, e.g. TLS keys).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Gives `path` to the cluster's owner (files the server must read).
    pub fn hand_over(&self, path: &Path) {
        if let Some(user) = &self.owner {
            chown(path, user);
        }
    }

    /// `pg_ctl stop` (fast): for tests of a database that goes away.
    pub fn stop(&self) {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts it again on the same port after [`PgCluster::stop`].
    pub fn restart(&self) {
        let data = self.data.display().to_string();
        let socket_dir = self._dir.path().display().to_string();
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = self._dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "restart",
            ],
        );
    }

    /// Runs one of PostgreSQL's programs as the cluster's owner; panics with its output
    /// when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = match &self.owner {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let path = self.bin.join("pg_ctl");
        let mut command = match &self.owner {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The directory holding `initdb` and `pg_ctl`.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn unprivileged_user() -> String {
    let exists = |user: &str| {
        Command::new("id")
            .arg(user)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if exists("postgres") {
        "postgres"
    } else {
        "nobody"
    }
    .to_string()
}

fn chown(path: &Path, user: &str) {
    let out = Command::new("chown")
        .args(["-R", user])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("chown: {e}"));
    assert!(out.status.success(), "chown {user} {}", path.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
