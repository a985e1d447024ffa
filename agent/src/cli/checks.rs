//! `doctor`'s checks of the box itself: the config, the state directory, the identity,
//! DNS, and ProxySmart with the configured credentials. Each returns an [`Outcome`] whose
//! fix hint says what to run. The control-plane checks are in `plane_checks`.

use super::check::Outcome;
use crate::boxside::proxysmart::{normalize_modems, ProxysmartClient, ProxysmartError};
use crate::config::{AgentConfig, ConfigError};
use crate::plane::identity::{Identity, IdentityError, KEY_FILE};
use crate::plane::proxy_tunnel::{self, ProxyEnv, Route};
use reqwest::Url;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How long one DNS lookup may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the package documents every option.
const OPTIONS_HINT: &str = "every option is documented in the comments of the packaged \
                            /etc/farmhand/agent.toml (config/agent.example.toml)";

/// The config loaded.
pub fn config_ok(path: &Path, config: &AgentConfig) -> Outcome {
    Outcome::Ok(format!(
        "{} parses (control plane {}, ProxySmart {})",
        path.display(),
        config.control_plane.url,
        config.proxysmart.url
    ))
}

/// The config did not load: the error names the file and key; the hint says what to do.
pub fn config_error(path: &Path, error: &ConfigError) -> Outcome {
    let fix = match error {
        ConfigError::Read { .. } => format!(
            "create {} (the package installs a commented one) or pass --config FILE",
            path.display()
        ),
        ConfigError::Invalid {
            key: "proxysmart.password_file",
            ..
        } => "put the ProxySmart admin password in that file, readable by the agent's user only: \
              install -m 0600 -o farmhand -g farmhand /dev/null FILE, then write the password \
              into it; run doctor as that user (sudo -u farmhand farmhand-agent doctor)"
            .to_string(),
        _ => format!("fix the key named above; {OPTIONS_HINT}"),
    };
    Outcome::fail(error.to_string(), fix)
}

/// The state directory exists, is private (no group/other access) and is writable by us.
pub fn state_dir(dir: &Path) -> Outcome {
    let d = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => {
            return Outcome::fail(
                format!("{d} is not a directory"),
                "point state_dir at a directory",
            )
        }
        Err(e) => {
            return Outcome::fail(
                format!("{d}: {e}"),
                format!("install -d -m 0700 -o farmhand -g farmhand {d} (the package creates it)"),
            )
        }
    };
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Outcome::fail(
            format!("{d} has mode {mode:04o}: group or others can access it"),
            format!("chmod 700 {d}"),
        );
    }
    if let Err(e) = probe_writable(dir) {
        return Outcome::fail(
            format!("{d} is not writable: {e}"),
            format!("run as the directory's owner (uid {}), e.g. sudo -u farmhand farmhand-agent doctor, or chown -R farmhand:farmhand {d}", meta.uid()),
        );
    }
    Outcome::Ok(format!("{d} (mode {mode:04o}, owner uid {})", meta.uid()))
}

/// Creates and removes a probe file: the only reliable "can the agent write here" test.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".doctor-probe");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)?;
    std::fs::remove_file(probe)
}

/// The agent is enrolled and its key file is private.
pub fn identity(config: &AgentConfig) -> Outcome {
    let dir = config.state_dir.display();
    match Identity::load(&config.state_dir) {
        Ok(id) => Outcome::Ok(format!(
            "agent {} (enrolled with {}), {KEY_FILE} mode 0600",
            id.agent_id, id.server
        )),
        Err(e @ IdentityError::NotEnrolled { .. }) => Outcome::fail(
            e.to_string(),
            format!(
                "enroll once with the marketplace's token: echo TOKEN | sudo -u farmhand \
                 farmhand-agent enroll --server {} --state-dir {dir}",
                config.control_plane.url
            ),
        ),
        Err(e @ IdentityError::KeyTooOpen { .. }) => {
            Outcome::fail(e.to_string(), format!("chmod 600 {dir}/{KEY_FILE}"))
        }
        Err(e) => Outcome::fail(
            e.to_string(),
            format!("run doctor as the agent's user (sudo -u farmhand …); if a file is corrupt, move {dir} away and enroll again with a new token"),
        ),
    }
}

/// The control plane's and ProxySmart's host names resolve.
pub async fn dns(config: &AgentConfig) -> Outcome {
    let mut found = Vec::new();
    for url in [&config.control_plane.url, &config.proxysmart.url] {
        let Some((mut host, mut port)) = host_port(url) else {
            return Outcome::fail(format!("{url:?} has no host"), "fix the URL in the config");
        };
        // Through a proxy, the proxy resolves the plane's name: this box needs the proxy's.
        if url == &config.control_plane.url {
            let proxies = ProxyEnv::from_process();
            let secure = config.control_plane.uses_tls();
            if let Ok(Route::Proxy(proxy)) = proxy_tunnel::route(&proxies, secure, &host) {
                found.push(format!("{host} (resolved by the proxy {proxy})"));
                (host, port) = (proxy.address().0.to_owned(), proxy.address().1);
            }
        }
        let lookup =
            tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.clone(), port)));
        match lookup.await {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(addr) => found.push(format!("{host} → {}", addr.ip())),
                None => return dns_failed(&host, "no address"),
            },
            Ok(Err(e)) => return dns_failed(&host, &e.to_string()),
            Err(_) => return dns_failed(&host, &format!("no answer within {DNS_TIMEOUT:?}")),
        }
    }
    Outcome::Ok(found.join(", "))
}

fn dns_failed(host: &str, why: &str) -> Outcome {
    Outcome::fail(
        format!("cannot resolve {host}: {why}"),
        "check the host name in the config and the resolver (/etc/resolv.conf, resolvectl status)",
    )
}

/// Host (without IPv6 brackets) and port (scheme default) of a URL.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let url = Url::parse(url).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Some((host, url.port_or_known_default()?))
}

/// ProxySmart answers `show_status_json` with the configured credentials.
pub async fn proxysmart(config: &AgentConfig) -> Outcome {
    let p = &config.proxysmart;
    let result = match ProxysmartClient::new(p) {
        Ok(client) => client.show_status().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(entries) => Outcome::Ok(format!(
            "{} answers as {} ({} modems)",
            p.url,
            p.username,
            normalize_modems(&entries, &[]).len()
        )),
        Err(e @ ProxysmartError::Unauthorized { .. }) => Outcome::fail(
            e.to_string(),
            "check proxysmart.username and the password in proxysmart.password_file (the ProxySmart admin login)",
        ),
        Err(e @ (ProxysmartError::Unavailable { .. } | ProxysmartError::Timeout)) => Outcome::fail(
            format!("{}: {e}", p.url),
            "is ProxySmart running on this box? Check proxysmart.url (the installer's default is http://127.0.0.1:8080)",
        ),
        Err(e) => Outcome::fail(
            format!("{}: {e}", p.url),
            "proxysmart.url must point at the ProxySmart API itself (not a web page or another service)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_dir_must_exist_and_be_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        assert!(
            matches!(state_dir(&dir), Outcome::Fail { ref fix, .. } if fix.contains("install -d -m 0700"))
        );
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            matches!(state_dir(&dir), Outcome::Fail { ref fix, .. } if fix.contains("chmod 700"))
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(state_dir(&dir), Outcome::Ok(_)));
        assert!(!dir.join(".doctor-probe").exists());
    }

    #[test]
    fn host_port_handles_defaults_and_ipv6() {
        assert_eq!(
            host_port("https://plane.example"),
            Some(("plane.example".into(), 443))
        );
        assert_eq!(host_port("http://[::1]:7000/x"), Some(("::1".into(), 7000)));
        assert_eq!(host_port("not a url"), None);
    }
}
