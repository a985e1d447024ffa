//! The real binaries as child processes, for tests where a crash or a signal is the point:
//! where to find them, a child that is killed when dropped, a `farmhand-control` process
//! with its keys, and a `farmhand-agent` process run from an [`AgentConfig`].

use super::api::Api;
use super::stack::LOOPBACK_TARGETS;
use super::within;
use anyhow::Context;
use farmhand_agent::AgentConfig;
use farmhand_test_support::postgres::PgCluster;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// `target/<profile>/<name>`: the test executable lives in `target/<profile>/deps`, the
/// workspace's binaries one level up (`cargo test --workspace` builds them all).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no grandparent directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p {}` or `cargo test --workspace`)",
        path.display(),
        match name {
            "farmhand-agent" => "farmhand-agent",
            "farmhand-control" => "farmhand-control",
            "proxysmart-sim" => "farmhand-sim",
            _ => "farmhand-testkit",
        }
    );
    Ok(path)
}

/// A child process, SIGKILLed and reaped when dropped; stdout and stderr go to a log file.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `binary(name)` with `args`, appending its output to `log`.
    pub fn spawn<I, S>(name: &str, args: I, log: &Path) -> anyhow::Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_with_env(name, args, &[], log)
    }

    /// [`Proc::spawn`] with `env` variables set for the child.
    pub fn spawn_with_env<I, S>(
        name: &str,
        args: I,
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = File::options().create(true).append(true).open(log)?;
        let child = Command::new(binary(name)?)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap: no chance to flush, close or say goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful stop request).
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid());
        Ok(())
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let child = &mut self.child;
        let status = within(limit, "the process to exit", || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await?;
        Ok(status)
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `farmhand-control serve` process on a fixed loopback port (so it can be restarted at
/// the same address), with an admin and a marketplace key; it allows loopback webhook
/// targets ([`LOOPBACK_TARGETS`]).
#[derive(Debug)]
pub struct PlaneProcess {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// REST client with the admin key.
    pub admin: Api,
    /// REST client with the marketplace key.
    pub market: Api,
    dir: PathBuf,
    proc: Option<Proc>,
    /// Its PostgreSQL, with `FARMHAND_TEST_STORE=postgres` (`stack::TEST_STORE`).
    database: Option<PgCluster>,
}

impl PlaneProcess {
    /// Writes `control.toml` (with `extra` TOML lines, e.g. `heartbeat_interval_s = 1`) in
    /// `dir`, creates the keys offline, starts the server and waits for `/healthz`.
    pub async fn start(dir: &Path, extra: &str) -> anyhow::Result<PlaneProcess> {
        if let Some(database) = super::stack::test_database()? {
            let mut plane = Self::start_node(dir, extra, &database.url, None).await?;
            plane.database = Some(database);
            return Ok(plane);
        }
        let port = free_port()?;
        let data = dir.join("data");
        std::fs::write(
            dir.join("control.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n{extra}\n",
                data.display().to_string()
            ),
        )?;
        let admin_key = create_key(&data, "admin")?;
        let market_key = create_key(&data, "marketplace")?;
        let url = format!("http://127.0.0.1:{port}");
        let mut plane = PlaneProcess {
            admin: Api::new(&url, Some(&admin_key)),
            market: Api::new(&url, Some(&market_key)),
            url,
            dir: dir.to_path_buf(),
            proc: None,
            database: None,
        };
        plane.restart().await?;
        Ok(plane)
    }

    /// A node of a cluster on the PostgreSQL database at `store_url`, in `dir` (`extra`
    /// as for [`PlaneProcess::start`]). The first node creates the keys in the database;
    /// a later one (`first`) uses the same keys and copies its `credentials.key`.
    pub async fn start_node(
        dir: &Path,
        extra: &str,
        store_url: &str,
        first: Option<&PlaneProcess>,
    ) -> anyhow::Result<PlaneProcess> {
        let port = free_port()?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let config = dir.join("control.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n{extra}\n\
                 [store]\nbackend = \"postgres\"\nurl = {store_url:?}\ntls = \"disable\"\n",
                data.display().to_string()
            ),
        )?;
        let url = format!("http://127.0.0.1:{port}");
        let (admin, market) = match first {
            Some(first) => {
                let key = "credentials.key";
                std::fs::copy(first.dir.join("data").join(key), data.join(key))?;
                (first.admin.with_base(&url), first.market.with_base(&url))
            }
            None => (
                Api::new(&url, Some(&create_key_in(&config, "admin")?)),
                Api::new(&url, Some(&create_key_in(&config, "marketplace")?)),
            ),
        };
        let mut plane = PlaneProcess {
            admin,
            market,
            url,
            dir: dir.to_path_buf(),
            proc: None,
            database: None,
        };
        plane.restart().await?;
        Ok(plane)
    }

    /// Starts the server again (after [`PlaneProcess::kill9`]) and waits until it serves.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("control.toml");
        // Through the environment, not the file: `extra` may hold its own `[webhooks]`.
        let allowed = LOOPBACK_TARGETS.join(",");
        let proc = Proc::spawn_with_env(
            "farmhand-control",
            [
                OsStr::new("serve"),
                OsStr::new("--config"),
                config.as_os_str(),
            ],
            &[("FARMHAND_WEBHOOKS_ALLOW_PRIVATE_TARGETS", &allowed)],
            &self.dir.join("control.log"),
        )?;
        self.proc = Some(proc);
        let health = Api::new(&self.url, None);
        within(
            Duration::from_secs(20),
            "the control plane's /healthz",
            || {
                let health = health.clone();
                async move {
                    health
                        .get("/healthz")
                        .await
                        .ok()
                        .filter(|r| r.status == 200)
                }
            },
        )
        .await
        .with_context(|| self.output())?;
        Ok(())
    }

    /// Stops the server as a service manager would (SIGTERM) and waits for it to exit.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut proc) = self.proc.take() else {
            anyhow::bail!("the plane is not running");
        };
        proc.sigterm()?;
        proc.wait_exit(Duration::from_secs(30)).await
    }

    /// `kill -9` the server.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// The server's log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default()
    }
}

fn create_key(data_dir: &Path, role: &str) -> anyhow::Result<String> {
    keys_create(role, "--data-dir", data_dir)
}

/// A key made in the store `config` names (PostgreSQL: in the database).
fn create_key_in(config: &Path, role: &str) -> anyhow::Result<String> {
    keys_create(role, "--config", config)
}

fn keys_create(role: &str, flag: &str, path: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary("farmhand-control")?)
        .args([
            "keys",
            "create",
            "--role",
            role,
            "--name",
            "fault-test",
            flag,
        ])
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A port that was free a moment ago (the plane process binds it itself).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A `farmhand-agent run` process for an enrolled state directory.
#[derive(Debug)]
pub struct AgentProcess {
    proc: Proc,
}

impl AgentProcess {
    /// Writes `config` as `<state_dir>/agent.toml` (the password in its own 0600 file) and
    /// starts `farmhand-agent run`; its output goes to `<state_dir>/agent.log`.
    pub fn start(config: &AgentConfig) -> anyhow::Result<AgentProcess> {
        let file = write_agent_config(config)?;
        let proc = Proc::spawn(
            "farmhand-agent",
            [OsStr::new("run"), OsStr::new("--config"), file.as_os_str()],
            &config.state_dir.join("agent.log"),
        )?;
        Ok(AgentProcess { proc })
    }

    /// The child process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// The TOML form of `config` (what `farmhand-agent run --config` reads).
pub fn write_agent_config(config: &AgentConfig) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &config.state_dir;
    let password_file = dir.join("proxysmart.password");
    std::fs::write(&password_file, config.proxysmart.password.expose())?;
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))?;
    let (p, cp, site) = (&config.proxysmart, &config.control_plane, &config.site);
    let offset = match p.box_utc_offset {
        farmhand_agent::config::proxysmart::BoxUtcOffset::Auto => "auto".to_string(),
        farmhand_agent::config::proxysmart::BoxUtcOffset::Fixed(s) => {
            let sign = if s < 0 { '-' } else { '+' };
            format!("{sign}{:02}:{:02}", s.abs() / 3600, s.abs() % 3600 / 60)
        }
    };
    let text = format!(
        "state_dir = {:?}\n\n[control_plane]\nurl = {:?}\ninsecure_plaintext = {}\n\n\
         [proxysmart]\nurl = {:?}\nusername = {:?}\npassword_file = {:?}\n\
         connect_timeout_s = {}\ntimeout_s = {}\npoll_interval_s = {}\nbox_utc_offset = {:?}\n\n\
         [site]\npublic_host = {:?}\ncountry = {:?}\n",
        dir.display().to_string(),
        cp.url,
        cp.insecure_plaintext,
        p.url,
        p.username,
        password_file.display().to_string(),
        p.connect_timeout.as_secs().max(1),
        p.timeout.as_secs().max(1),
        p.poll_interval.as_secs().max(1),
        offset,
        site.public_host,
        site.country,
    );
    let file = dir.join("agent.toml");
    std::fs::write(&file, text)?;
    Ok(file)
}
