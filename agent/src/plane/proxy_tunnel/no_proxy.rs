//! `NO_PROXY` matching, as reqwest (hyper-util's `NoProxy`) and curl do it: a comma list
//! of `*`, IP addresses, CIDR blocks and domains (each matching itself and its
//! subdomains, a leading dot optional). Host names are compared as text, never resolved.

use std::net::IpAddr;

/// One parsed `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `*`: every host.
    All,
    /// An address, or a block when the prefix is shorter than the address.
    Ip { addr: IpAddr, prefix: u8 },
    /// A domain, lower-cased, without its leading dot.
    Domain(String),
}

/// A parsed `NO_PROXY` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NoProxy(Vec<Entry>);

impl NoProxy {
    /// Parses the list; whitespace around entries and empty entries are ignored.
    pub(super) fn parse(value: &str) -> NoProxy {
        let entries = value
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_entry)
            .collect();
        NoProxy(entries)
    }

    /// Whether `host` (without IPv6 brackets) bypasses the proxy.
    pub(super) fn matches(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        self.0.iter().any(|entry| match (entry, ip) {
            (Entry::All, _) => true,
            (Entry::Ip { addr, prefix }, Some(ip)) => in_block(ip, *addr, *prefix),
            (Entry::Domain(domain), None) => domain_matches(host, domain),
            _ => false,
        })
    }
}

fn parse_entry(entry: &str) -> Entry {
    if entry == "*" {
        return Entry::All;
    }
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Entry::Ip {
            addr,
            prefix: full_prefix(addr),
        };
    }
    if let Some((addr, prefix)) = entry.split_once('/') {
        if let (Ok(addr), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u8>()) {
            if prefix <= full_prefix(addr) {
                return Entry::Ip { addr, prefix };
            }
        }
    }
    let domain = entry.strip_prefix('.').unwrap_or(entry);
    Entry::Domain(domain.to_ascii_lowercase())
}

fn full_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Whether `ip` is in `addr/prefix` (host bits in `addr` are ignored, as in `ipnet`).
fn in_block(ip: IpAddr, addr: IpAddr, prefix: u8) -> bool {
    match (ip, addr) {
        (IpAddr::V4(ip), IpAddr::V4(addr)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(addr) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(addr)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(addr) & mask
        }
        _ => false,
    }
}

/// `domain` itself or any subdomain of it, case-insensitively.
fn domain_matches(host: &str, domain: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}
