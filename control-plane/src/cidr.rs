//! CIDR blocks (`10.0.0.0/8`, `fc00::/7`): parsing with the prefix length checked, and
//! membership of an address. Config uses it to validate `[webhooks] allow_private_targets`,
//! and `webhooks::targets` to classify addresses; it sits below both and depends on nothing.
//!
//! Written here rather than taken from a crate: the whole need is a parser and a mask.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A block of addresses: a network address and a prefix length. Its host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` between address and prefix length.
    #[error("{0:?} is not a CIDR block: expected ADDRESS/PREFIX, like 10.0.0.0/8 or ::1/128")]
    NoPrefix(String),
    /// The part before the `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not a CIDR block: the address is not IPv4 or IPv6")]
    BadAddress(String),
    /// The prefix length is not a number, or longer than the address.
    #[error("{0:?} is not a CIDR block: the prefix length must be 0 to {1}")]
    BadPrefix(String, u8),
    /// Bits after the prefix are set (a typo more often than intended).
    #[error("{text:?} has bits set after the prefix; the block is {network}/{prefix}")]
    HostBits {
        /// What was written.
        text: String,
        /// The network address of the block it falls in.
        network: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
}

impl Cidr {
    /// The IPv4 block `a.b.c.d/prefix`; for tables of constants (host bits are cleared).
    pub const fn v4(octets: [u8; 4], prefix: u8) -> Cidr {
        let bits = u32::from_be_bytes(octets) & v4_mask(prefix);
        Cidr {
            network: IpAddr::V4(Ipv4Addr::from_bits(bits)),
            prefix,
        }
    }

    /// The IPv6 block given by its eight 16-bit groups and `prefix`; for tables of
    /// constants (host bits are cleared).
    pub const fn v6(groups: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = groups;
        let bits = Ipv6Addr::new(a, b, c, d, e, f, g, h).to_bits() & v6_mask(prefix);
        Cidr {
            network: IpAddr::V6(Ipv6Addr::from_bits(bits)),
            prefix,
        }
    }

    /// Whether `ip` is in the block. An IPv4 address is never in an IPv6 block nor the
    /// reverse: callers that want `::ffff:a.b.c.d` treated as IPv4 convert it first.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                ip.to_bits() & v4_mask(self.prefix) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                ip.to_bits() & v6_mask(self.prefix) == net.to_bits()
            }
            _ => false,
        }
    }
}

/// The IPv4 netmask of `prefix` (at most 32) bits.
const fn v4_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

/// The IPv6 netmask of `prefix` (at most 128) bits.
const fn v6_mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix as u32)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS/PREFIX`; the prefix is required (a bare address is refused rather than
    /// guessed to mean one host) and host bits must be zero.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let owned = || text.to_owned();
        let (address, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| CidrError::NoPrefix(owned()))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| CidrError::BadAddress(owned()))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        // Digits only: `u8::from_str` would take "+8".
        let prefix: u8 = Some(prefix)
            .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse().ok())
            .filter(|p| *p <= max)
            .ok_or_else(|| CidrError::BadPrefix(owned(), max))?;
        let block = match address {
            IpAddr::V4(a) => Cidr::v4(a.octets(), prefix),
            IpAddr::V6(a) => Cidr::v6(a.segments(), prefix),
        };
        if block.network != address {
            return Err(CidrError::HostBits {
                text: owned(),
                network: block.network,
                prefix,
            });
        }
        Ok(block)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_blocks_contain_what_their_prefix_covers() {
        let private = cidr("10.0.0.0/8");
        assert!(private.contains(ip("10.0.0.0")));
        assert!(private.contains(ip("10.255.255.255")));
        assert!(!private.contains(ip("11.0.0.0")));
        assert!(!private.contains(ip("9.255.255.255")));
        let cgnat = cidr("100.64.0.0/10");
        assert!(cgnat.contains(ip("100.127.255.255")));
        assert!(!cgnat.contains(ip("100.128.0.0")));
        let host = cidr("127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let all = cidr("0.0.0.0/0");
        assert!(all.contains(ip("203.0.113.9")) && all.contains(ip("255.255.255.255")));
        assert!(
            !all.contains(ip("::1")),
            "an IPv4 block holds no IPv6 address"
        );
    }

    #[test]
    fn ipv6_blocks_contain_what_their_prefix_covers() {
        let ula = cidr("fc00::/7");
        assert!(ula.contains(ip("fc00::1")));
        assert!(ula.contains(ip("fdff:ffff::1")));
        assert!(!ula.contains(ip("fe00::")));
        let link = cidr("fe80::/10");
        assert!(link.contains(ip("febf::1")));
        assert!(!link.contains(ip("fec0::1")));
        let one = cidr("::1/128");
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        assert!(!one.contains(ip("127.0.0.1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("10.0.0.1")));
    }

    #[test]
    fn constructors_match_the_parser() {
        assert_eq!(Cidr::v4([169, 254, 0, 0], 16), cidr("169.254.0.0/16"));
        assert_eq!(
            Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
            cidr("fe80::/10")
        );
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" ::1/128 ").to_string(), "::1/128");
    }

    #[test]
    fn bad_blocks_say_what_is_wrong() {
        let err = |text: &str| text.parse::<Cidr>().unwrap_err();
        assert!(matches!(err("10.0.0.1"), CidrError::NoPrefix(_)));
        assert!(matches!(err(""), CidrError::NoPrefix(_)));
        assert!(matches!(err("10.0.0/8"), CidrError::BadAddress(_)));
        assert!(matches!(err("localhost/8"), CidrError::BadAddress(_)));
        assert!(matches!(err("10.0.0.0/33"), CidrError::BadPrefix(_, 32)));
        assert!(matches!(err("::/129"), CidrError::BadPrefix(_, 128)));
        assert!(matches!(err("10.0.0.0/"), CidrError::BadPrefix(..)));
        assert!(matches!(err("10.0.0.0/+8"), CidrError::BadPrefix(..)));
        assert!(matches!(err("10.0.0.0/-1"), CidrError::BadPrefix(..)));
        assert!(matches!(err("10.0.0.0/8/8"), CidrError::BadPrefix(..)));
        assert!(matches!(err("10.0.0.0/0008"), CidrError::BadPrefix(..)));
        let host_bits = err("10.1.2.3/8");
        assert_eq!(
            host_bits.to_string(),
            "\"10.1.2.3/8\" has bits set after the prefix; the block is 10.0.0.0/8"
        );
        assert!(matches!(err("fe80::1/10"), CidrError::HostBits { .. }));
        assert!(err("10.0.0.0/33").to_string().contains("0 to 32"));
    }
}
