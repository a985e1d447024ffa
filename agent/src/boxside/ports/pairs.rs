//! Choosing the HTTP and SOCKS ports of a new port from the box's free list. Field boxes
//! hand out two pools, HTTP 8001–8999 and SOCKS 5001–5999, and drop a port whose numbers
//! are not a matched pair (8029 goes with 5029): where the free list has such pairs, one is
//! taken; a box without pools gets any two distinct free ports, as before.

use super::check::MIN_TCP_PORT;
use crate::boxside::proxysmart::PortEntry;
use farmhand_protocol::{CommandError, CommandErrorCode};

/// HTTP pool base: port `HTTP_BASE + n` goes with `SOCKS_BASE + n`, n in 1..=999.
const HTTP_BASE: u16 = 8000;
const SOCKS_BASE: u16 = 5000;
const PAIRS: u16 = 999;

fn mate(http: u16) -> Option<u16> {
    (HTTP_BASE + 1..=HTTP_BASE + PAIRS)
        .contains(&http)
        .then(|| http - (HTTP_BASE - SOCKS_BASE))
}

/// Whether the free list comes in matched pool pairs (what the box profile records).
pub fn pooled(free: &[u16]) -> bool {
    free.iter()
        .any(|p| mate(*p).is_some_and(|socks| free.contains(&socks)))
}

/// A matched pair when the free list has one, else two distinct free ports; never a port
/// below 1024 or one an existing port uses.
pub fn pick(free: &[u16], existing: &[PortEntry]) -> Result<(u16, u16), CommandError> {
    let usable = |p: &u16| {
        *p >= MIN_TCP_PORT
            && !existing
                .iter()
                .any(|e| e.http_port == Some(*p) || e.socks_port == Some(*p))
    };
    let candidates: Vec<u16> = free.iter().copied().filter(usable).collect();
    let matched = candidates.iter().find_map(|http| {
        mate(*http)
            .filter(|s| candidates.contains(s))
            .map(|s| (*http, s))
    });
    if let Some(pair) = matched {
        return Ok(pair);
    }
    let first = candidates.first().copied();
    let second = candidates.iter().copied().find(|p| Some(*p) != first);
    match (first, second) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(CommandError::new(
            CommandErrorCode::NoFreePorts,
            format!("ProxySmart has fewer than two free TCP ports in {MIN_TCP_PORT}..=65535"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::masked::Masked;

    fn entry(http: u16, socks: u16) -> PortEntry {
        PortEntry {
            imei: "356000000000001".into(),
            port_id: "p".into(),
            port_name: "x".into(),
            http_port: Some(http),
            socks_port: Some(socks),
            login: String::new(),
            password: Masked::new(""),
            valid_before: String::new(),
            created_at: String::new(),
            quota: String::new(),
            over_quota: false,
            expired: None,
            bandlimin: None,
            bandlimout: None,
            bw_quota: None,
        }
    }

    #[test]
    fn a_matched_pair_is_preferred_where_the_pools_offer_one() {
        assert_eq!(pick(&[8412, 8413, 5412, 5413], &[]).unwrap(), (8412, 5412));
        assert_eq!(pick(&[8030, 5029, 8029], &[]).unwrap(), (8029, 5029));
        // 8412/5412 taken by an existing port: the next pair.
        assert_eq!(
            pick(&[8412, 8413, 5412, 5413], &[entry(8412, 5412)]).unwrap(),
            (8413, 5413)
        );
        assert!(pooled(&[8412, 5412]));
        assert!(!pooled(&[8412, 8413]));
    }

    #[test]
    fn without_pools_any_two_distinct_free_ports() {
        assert_eq!(pick(&[40001, 40002, 40003], &[]).unwrap(), (40001, 40002));
        assert_eq!(pick(&[40001, 40001, 40002], &[]).unwrap(), (40001, 40002));
        assert_eq!(
            pick(&[40001, 40002, 40003, 40004], &[entry(40001, 40003)]).unwrap(),
            (40002, 40004)
        );
        let err = pick(&[40001], &[]).unwrap_err();
        assert_eq!(err.code, CommandErrorCode::NoFreePorts);
        assert_eq!(pick(&[0, 80, 1023, 1024, 1025], &[]).unwrap(), (1024, 1025));
        assert!(pick(&[0, 0, 22], &[]).is_err());
    }
}
