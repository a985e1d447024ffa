//! Is the seller's box itself safe? The agent needs only loopback access to ProxySmart's
//! admin API, so an API that still takes the installer's default credentials
//! (`proxy`/`proxy`), or that listens on an address other than loopback, is a risk the
//! seller should fix: anyone who reaches it can create ports on the box's modems. Both are
//! warnings with the fix, from `doctor` and `selftest`.

use super::check::Outcome;
use crate::base::masked::Masked;
use crate::boxside::proxysmart::{ProxysmartClient, ProxysmartError};
use crate::config::AgentConfig;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The installer's default admin login.
const DEFAULT_USER: &str = "proxy";
const DEFAULT_PASSWORD: &str = "proxy";

/// Warns when the admin API accepts `proxy`/`proxy`.
pub async fn default_credentials(config: &AgentConfig) -> Outcome {
    let mut p = config.proxysmart.clone();
    p.username = DEFAULT_USER.to_string();
    p.password = Masked::new(DEFAULT_PASSWORD);
    let result = match ProxysmartClient::new(&p) {
        Ok(client) => client.show_status().await.map(drop),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Outcome::warn(
            "ProxySmart's admin API still accepts the installer's default login proxy/proxy",
            "set a strong admin password on the box (htpasswd for the user the agent uses, and \
             remove the proxy user), then put it in proxysmart.password_file",
        ),
        Err(ProxysmartError::Unauthorized { .. }) => {
            Outcome::Ok("the installer's default login proxy/proxy is refused".into())
        }
        Err(e) => Outcome::Skip(format!("could not tell ({e})")),
    }
}

/// Warns when the admin API's port listens on a non-loopback address of this host.
pub fn exposure(config: &AgentConfig) -> Outcome {
    let Some((host, port)) = super::checks::host_port(&config.proxysmart.url) else {
        return Outcome::Skip("proxysmart.url has no host and port".into());
    };
    let local = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !local {
        return Outcome::warn(
            format!("the agent reaches ProxySmart at {host}, not on loopback"),
            "the agent needs only http://127.0.0.1:<port>; keep the admin API off the network",
        );
    }
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect::<Vec<_>>();
    if tables.is_empty() {
        return Outcome::Skip("cannot read /proc/net/tcp".into());
    }
    let exposed: Vec<IpAddr> = tables
        .iter()
        .flat_map(|t| listeners(t, port))
        .filter(|ip| !ip.is_loopback())
        .collect();
    match exposed.first() {
        None => Outcome::Ok(format!(
            "the admin API (port {port}) listens on loopback only"
        )),
        Some(ip) => Outcome::warn(
            format!("the admin API's port {port} also listens on {ip}: other hosts may reach it"),
            "bind ProxySmart's admin API (nginx `listen`) to 127.0.0.1, or firewall the port",
        ),
    }
}

/// The local addresses listening on `port` in a `/proc/net/tcp{,6}` table.
pub fn listeners(table: &str, port: u16) -> Vec<IpAddr> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (addr, p) = local.split_once(':')?;
            (state == LISTEN && u16::from_str_radix(p, 16).ok()? == port)
                .then(|| parse_addr(addr))?
        })
        .collect()
}

/// A `/proc/net/tcp` address: 8 hex digits (IPv4) or 32 (IPv6), in host byte order words.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => {
            let n = u32::from_str_radix(hex, 16).ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(n.swap_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1";
    const TCP6: &str =
        "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A";

    #[test]
    fn listening_addresses_are_read_from_proc() {
        assert_eq!(listeners(TCP, 8080), [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(
            listeners(TCP, 8081),
            [IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            "only LISTEN"
        );
        assert_eq!(listeners(TCP6, 8080), [IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert_eq!(listeners(TCP6, 8082), [IpAddr::V6(Ipv6Addr::UNSPECIFIED)]);
        assert!(listeners(TCP, 9).is_empty());
    }
}
