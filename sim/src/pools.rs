//! Free TCP ports as a field box hands them out (`Quirks::port_pools`): two pools, HTTP
//! 8001–8999 and SOCKS 5001–5999, where port `8000 + n` goes with `5000 + n`.
//!
//! The ports must really be free on the proxy address, since `apply_port` binds them. Every
//! simulator in a test process draws from the same two pools, so a port handed out is
//! leased process-wide for a while: two simulators never offer the same pair before either
//! has bound it. Each listing starts at a random pair, which keeps simulators in separate
//! processes apart too (and a bind that still collides fails `apply_port` cleanly).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First HTTP port of the HTTP pool.
pub const HTTP_BASE: u16 = 8000;
/// First SOCKS port of the SOCKS pool.
pub const SOCKS_BASE: u16 = 5000;
/// Pairs per pool: 8001–8999 and 5001–5999.
pub const PAIRS: u16 = 999;
/// How long a handed-out port stays reserved for the simulator that offered it.
const LEASE: Duration = Duration::from_secs(120);

static LEASES: Mutex<Option<HashMap<u16, (usize, Instant)>>> = Mutex::new(None);

/// Whether `http` and `socks` are a matched pair of the two pools.
pub fn matched(http: u16, socks: u16) -> bool {
    (HTTP_BASE + 1..=HTTP_BASE + PAIRS).contains(&http)
        && socks.checked_add(HTTP_BASE - SOCKS_BASE) == Some(http)
}

/// Up to `pairs` matched pairs free on `ip`, not in `used`, and not leased to another
/// simulator (`owner` is this simulator's identity); they are leased to `owner`. Returned
/// flat, HTTP ports first, as a box's list is: `[8412, 8413, …, 5412, 5413, …]`.
pub fn free_pairs(ip: IpAddr, pairs: usize, used: &[u16], owner: usize) -> Vec<u16> {
    let mut leases = LEASES.lock().unwrap_or_else(|e| e.into_inner());
    let leases = leases.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    leases.retain(|_, (_, at)| now.duration_since(*at) < LEASE);
    let start = u16::from_le_bytes(random_pair()) % PAIRS;
    let mut found: Vec<(u16, u16)> = Vec::with_capacity(pairs);
    for step in 0..PAIRS {
        if found.len() == pairs {
            break;
        }
        let n = (start + step) % PAIRS + 1;
        let (http, socks) = (HTTP_BASE + n, SOCKS_BASE + n);
        let taken = |p: u16| {
            used.contains(&p)
                || leases.get(&p).is_some_and(|(o, _)| *o != owner)
                || !bindable(ip, p)
        };
        if !taken(http) && !taken(socks) {
            found.push((http, socks));
        }
    }
    for (http, socks) in &found {
        leases.insert(*http, (owner, now));
        leases.insert(*socks, (owner, now));
    }
    found
        .iter()
        .map(|p| p.0)
        .chain(found.iter().map(|p| p.1))
        .collect()
}

fn bindable(ip: IpAddr, port: u16) -> bool {
    TcpListener::bind(SocketAddr::new(ip, port)).is_ok()
}

fn random_pair() -> [u8; 2] {
    let hex = super::util::random_hex(2);
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("0"), 16).unwrap_or(0);
    [byte(0), byte(2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn pairs_match_across_the_pools() {
        assert!(matched(8029, 5029));
        assert!(!matched(8029, 8030));
        assert!(!matched(8029, 5030));
        assert!(!matched(9000, 6000));
        assert!(!matched(8000, 5000));
    }

    #[test]
    fn two_simulators_never_get_the_same_ports() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = free_pairs(ip, 5, &[], 1_000_001);
        let b = free_pairs(ip, 5, &[], 1_000_002);
        assert_eq!(a.len(), 10);
        assert_eq!(b.len(), 10);
        assert!(a.iter().all(|p| !b.contains(p)), "{a:?} / {b:?}");
        for i in 0..5 {
            assert!(matched(a[i], a[i + 5]));
        }
        // The same simulator may be offered its own leased ports again.
        let again = free_pairs(ip, 999, &[], 1_000_001);
        assert!(a.iter().all(|p| again.contains(p)));
    }
}
