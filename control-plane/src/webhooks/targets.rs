//! Which addresses webhooks may be sent to. By default only globally routable ones: an API
//! key holder must not be able to make the plane POST to its own loopback admin ports, a
//! cloud metadata service (169.254.169.254) or the operator's private network (SSRF).
//! `[webhooks] allow_private_targets` lists the blocks an operator allows anyway.
//!
//! This module only judges addresses; `resolve` applies the judgement to names at
//! registration and at every delivery (after DNS, so a name re-pointed later is caught).

use crate::cidr::Cidr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 blocks that are not global, with what they are (IANA special-purpose registry).
const V4_FORBIDDEN: &[(Cidr, &str)] = &[
    (Cidr::v4([0, 0, 0, 0], 8), "unspecified (\"this network\")"),
    (Cidr::v4([10, 0, 0, 0], 8), "private"),
    (Cidr::v4([100, 64, 0, 0], 10), "shared (CGNAT)"),
    (Cidr::v4([127, 0, 0, 0], 8), "loopback"),
    (Cidr::v4([169, 254, 0, 0], 16), "link-local"),
    (Cidr::v4([172, 16, 0, 0], 12), "private"),
    (
        Cidr::v4([192, 0, 0, 0], 24),
        "reserved (IETF protocol assignments)",
    ),
    (Cidr::v4([192, 0, 2, 0], 24), "documentation"),
    (Cidr::v4([192, 88, 99, 0], 24), "reserved (6to4 relay)"),
    (Cidr::v4([192, 168, 0, 0], 16), "private"),
    (Cidr::v4([198, 18, 0, 0], 15), "benchmarking"),
    (Cidr::v4([198, 51, 100, 0], 24), "documentation"),
    (Cidr::v4([203, 0, 113, 0], 24), "documentation"),
    (Cidr::v4([224, 0, 0, 0], 4), "multicast"),
    (Cidr::v4([255, 255, 255, 255], 32), "broadcast"),
    (Cidr::v4([240, 0, 0, 0], 4), "reserved"),
];

/// IPv6 blocks that are not global. IPv4-mapped addresses are judged as IPv4 before this
/// table is read; NAT64 and 6to4 addresses by the IPv4 address they carry.
const V6_FORBIDDEN: &[(Cidr, &str)] = &[
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible (deprecated)",
    ),
    (
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "private (local NAT64)",
    ),
    (Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo tunnel"),
    (Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
    ),
    (
        Cidr::v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28),
        "reserved (ORCHID)",
    ),
    (Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (
        Cidr::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        "reserved (SRv6)",
    ),
    (Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local"),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// NAT64 (64:ff9b::/96): the last 32 bits are the IPv4 address reached.
const NAT64: Cidr = Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4 (2002::/16): bits 16..48 are the IPv4 address of the tunnel end.
const SIX_TO_FOUR: Cidr = Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// A target address the policy does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("target address {address} is not allowed ({kind} address)")]
pub struct Refused {
    /// The address (IPv4-mapped IPv6 addresses shown as IPv4).
    pub address: IpAddr,
    /// What kind of address it is: "loopback", "private", …
    pub kind: &'static str,
}

impl Refused {
    /// The kind with its article, for sentences: "a loopback", "an unspecified".
    pub fn a_kind(&self) -> String {
        // Of the kinds above only these start with a vowel sound.
        let an = self.kind.starts_with("unspecified") || self.kind.starts_with("IPv4");
        format!("{} {}", if an { "an" } else { "a" }, self.kind)
    }
}

/// The allowed targets: every global address, plus the blocks of
/// `[webhooks] allow_private_targets`.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allowed: Vec<Cidr>,
}

impl TargetPolicy {
    /// Global addresses, plus `allowed`.
    pub fn new(allowed: Vec<Cidr>) -> Self {
        TargetPolicy { allowed }
    }

    /// `Ok` when the plane may connect to `address`.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        // `::ffff:127.0.0.1` reaches 127.0.0.1: judge (and allow) it as that.
        let address = canonical(address);
        if self.allowed.iter().any(|block| block.contains(address)) {
            return Ok(());
        }
        match non_global(address) {
            Some(kind) => Err(Refused { address, kind }),
            None => Ok(()),
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-global address `address` is; `None` for a global one.
fn non_global(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => lookup(V4_FORBIDDEN, IpAddr::V4(v4)),
        IpAddr::V6(v6) => {
            if let Some(carried) = embedded_v4(v6) {
                if let Some(kind) = non_global(IpAddr::V4(carried)) {
                    return Some(kind);
                }
            }
            lookup(V6_FORBIDDEN, IpAddr::V6(v6))
        }
    }
}

fn lookup(table: &[(Cidr, &'static str)], address: IpAddr) -> Option<&'static str> {
    table
        .iter()
        .find(|(block, _)| block.contains(address))
        .map(|(_, kind)| *kind)
}

/// The IPv4 address a NAT64 or 6to4 address leads to.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = v6.to_bits();
    if NAT64.contains(IpAddr::V6(v6)) {
        // Truncation intended: the low 32 bits.
        return Some(Ipv4Addr::from_bits(bits as u32));
    }
    if SIX_TO_FOUR.contains(IpAddr::V6(v6)) {
        return Some(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn kind(policy: &TargetPolicy, text: &str) -> Option<&'static str> {
        policy.check(ip(text)).err().map(|r| r.kind)
    }

    #[test]
    fn non_global_ipv4_addresses_are_refused_by_default() {
        let policy = TargetPolicy::default();
        for (address, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified (\"this network\")"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.10", "documentation"),
            ("198.18.0.1", "benchmarking"),
        ] {
            assert_eq!(kind(&policy, address), Some(expected), "{address}");
        }
        for global in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
        ] {
            assert_eq!(policy.check(ip(global)), Ok(()), "{global}");
        }
    }

    #[test]
    fn non_global_ipv6_addresses_are_refused_by_default() {
        let policy = TargetPolicy::default();
        for (address, expected) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("::127.0.0.1", "IPv4-compatible (deprecated)"),
            // IPv4-mapped: judged as the IPv4 address they reach.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            // NAT64 and 6to4 carry an IPv4 address.
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::1", "loopback"),
        ] {
            assert_eq!(kind(&policy, address), Some(expected), "{address}");
        }
        for global in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(policy.check(ip(global)), Ok(()), "{global}");
        }
    }

    #[test]
    fn refusals_name_the_address_as_reached() {
        let refused = TargetPolicy::default()
            .check(ip("::ffff:127.0.0.1"))
            .unwrap_err();
        assert_eq!(refused.address, ip("127.0.0.1"));
        assert_eq!(
            refused.to_string(),
            "target address 127.0.0.1 is not allowed (loopback address)"
        );
        assert_eq!(refused.a_kind(), "a loopback");
        let unspecified = TargetPolicy::default().check(ip("0.0.0.0")).unwrap_err();
        assert_eq!(unspecified.a_kind(), "an unspecified (\"this network\")");
        let compatible = TargetPolicy::default().check(ip("::10.0.0.1")).unwrap_err();
        assert_eq!(compatible.a_kind(), "an IPv4-compatible (deprecated)");
        let ula = TargetPolicy::default().check(ip("fc00::1")).unwrap_err();
        assert_eq!(ula.a_kind(), "a unique-local");
    }

    #[test]
    fn the_allow_list_opens_exactly_its_blocks() {
        let policy = TargetPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        for allowed in [
            "127.0.0.1",
            "127.9.9.9",
            "::ffff:127.0.0.1",
            "10.20.30.40",
            "::1",
        ] {
            assert_eq!(policy.check(ip(allowed)), Ok(()), "{allowed}");
        }
        for refused in [
            "169.254.169.254",
            "10.21.0.1",
            "192.168.0.1",
            "fe80::1",
            "fc00::1",
        ] {
            assert!(policy.check(ip(refused)).is_err(), "{refused}");
        }
    }
}
