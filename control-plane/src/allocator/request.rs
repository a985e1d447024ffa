//! Validation of allocation requests into their normalised form (the form compared for
//! idempotency): order id, duration, the optional country / carrier / IMEI filters, and the
//! optional automatic rotation interval (`check_rotate_every`, whose minimum is the
//! plane's `min_rotate_every_s`), and the optional port limits (`bandwidth_kbit`,
//! `traffic_quota_mb`).

use super::AllocError;
use crate::config::MAX_ROTATE_EVERY_S;
use crate::store::AllocationRequest;

/// Shortest allocation, seconds.
pub const MIN_DURATION_S: u64 = 60;
/// Longest allocation (365 days), seconds.
pub const MAX_DURATION_S: u64 = 31_536_000;
/// Largest speed limit, kbit/s (10 Gbit/s, far above any modem; the agent's own bound).
pub const MAX_BANDWIDTH_KBIT: u64 = 10_000_000;
/// Largest traffic quota, MB (100 TB; the agent's own bound).
pub const MAX_TRAFFIC_QUOTA_MB: u64 = 100_000_000;
const MAX_ORDER_ID_CHARS: usize = 128;
const MAX_CARRIER_CHARS: usize = 64;

/// Checks every field; upper-cases the country.
pub fn normalize(request: AllocationRequest) -> Result<AllocationRequest, AllocError> {
    check_order_id(&request.order_id)?;
    check_duration(request.duration_s)?;
    let country = request.country.map(|c| check_country(&c)).transpose()?;
    if let Some(carrier) = &request.carrier {
        let len = carrier.chars().count();
        if len == 0 || len > MAX_CARRIER_CHARS || carrier.chars().any(char::is_control) {
            return Err(invalid(format!(
                "carrier must be 1–{MAX_CARRIER_CHARS} printable characters"
            )));
        }
    }
    if let Some(imei) = &request.imei {
        check_imei(imei)?;
    }
    check_limit("bandwidth_kbit", request.bandwidth_kbit, MAX_BANDWIDTH_KBIT)?;
    check_limit(
        "traffic_quota_mb",
        request.traffic_quota_mb,
        MAX_TRAFFIC_QUOTA_MB,
    )?;
    Ok(AllocationRequest { country, ..request })
}

/// `duration_s` must be within 60 … 31,536,000.
pub fn check_duration(duration_s: u64) -> Result<(), AllocError> {
    if (MIN_DURATION_S..=MAX_DURATION_S).contains(&duration_s) {
        Ok(())
    } else {
        Err(invalid(format!(
            "duration_s must be between {MIN_DURATION_S} and {MAX_DURATION_S}"
        )))
    }
}

/// `rotate_every_s`, when present, must be within `min_s` (the plane's
/// `min_rotate_every_s`, 60 by default) … [`MAX_ROTATE_EVERY_S`].
pub fn check_rotate_every(rotate_every_s: Option<u64>, min_s: u64) -> Result<(), AllocError> {
    match rotate_every_s {
        Some(s) if !(min_s..=MAX_ROTATE_EVERY_S).contains(&s) => Err(invalid(format!(
            "rotate_every_s must be between {min_s} and {MAX_ROTATE_EVERY_S}"
        ))),
        _ => Ok(()),
    }
}

/// An optional limit: absent (`null`: no limit) or 1 … `max`. 0 is refused rather than
/// read as "unlimited", so a mistaken 0 never silently lifts a limit.
pub fn check_limit(field: &str, value: Option<u64>, max: u64) -> Result<(), AllocError> {
    match value {
        Some(v) if v == 0 || v > max => Err(invalid(format!(
            "{field} must be between 1 and {max}, or absent for no limit"
        ))),
        _ => Ok(()),
    }
}

/// An IMEI is 14 to 16 digits, as boxes report them (`farmhand_protocol::is_imei`).
pub fn check_imei(imei: &str) -> Result<(), AllocError> {
    if farmhand_protocol::is_imei(imei) {
        Ok(())
    } else {
        Err(invalid("imei must be 14 to 16 digits".to_string()))
    }
}

fn check_order_id(order_id: &str) -> Result<(), AllocError> {
    let len = order_id.chars().count();
    if len == 0 || len > MAX_ORDER_ID_CHARS || order_id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "order_id must be 1–{MAX_ORDER_ID_CHARS} printable characters"
        )));
    }
    Ok(())
}

fn check_country(country: &str) -> Result<String, AllocError> {
    if country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(country.to_ascii_uppercase())
    } else {
        Err(invalid(
            "country must be an ISO 3166-1 alpha-2 code such as \"DE\"".to_string(),
        ))
    }
}

fn invalid(message: String) -> AllocError {
    AllocError::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(order_id: &str, duration_s: u64) -> AllocationRequest {
        AllocationRequest {
            order_id: order_id.into(),
            duration_s,
            country: None,
            carrier: None,
            imei: None,
            rotate_every_s: None,
            bandwidth_kbit: None,
            traffic_quota_mb: None,
        }
    }

    #[test]
    fn accepts_valid_requests_and_normalises_country() {
        let r = normalize(AllocationRequest {
            country: Some("de".into()),
            ..req("o-1", 60)
        })
        .unwrap();
        assert_eq!(r.country.as_deref(), Some("DE"));
        assert!(normalize(req(&"x".repeat(128), MAX_DURATION_S)).is_ok());
        let limited = AllocationRequest {
            bandwidth_kbit: Some(MAX_BANDWIDTH_KBIT),
            traffic_quota_mb: Some(1),
            ..req("o-2", 60)
        };
        assert_eq!(normalize(limited.clone()).unwrap(), limited);
    }

    #[test]
    fn rotate_every_s_is_optional_and_bounded() {
        assert!(check_rotate_every(None, 60).is_ok());
        assert!(check_rotate_every(Some(60), 60).is_ok());
        assert!(check_rotate_every(Some(MAX_ROTATE_EVERY_S), 60).is_ok());
        for bad in [0, 59, MAX_ROTATE_EVERY_S + 1] {
            let e = check_rotate_every(Some(bad), 60).unwrap_err();
            assert!(matches!(&e, AllocError::Invalid(m) if m.contains("rotate_every_s")));
        }
        assert!(
            check_rotate_every(Some(2), 1).is_ok(),
            "tests may lower the minimum"
        );
    }

    #[test]
    fn rejects_out_of_range_fields() {
        for bad in [
            req("", 60),
            req(&"x".repeat(129), 60),
            req("a\nb", 60),
            req("o", 59),
            req("o", MAX_DURATION_S + 1),
            AllocationRequest {
                country: Some("DEU".into()),
                ..req("o", 60)
            },
            AllocationRequest {
                country: Some("D1".into()),
                ..req("o", 60)
            },
            AllocationRequest {
                carrier: Some(String::new()),
                ..req("o", 60)
            },
            AllocationRequest {
                imei: Some("123".into()),
                ..req("o", 60)
            },
            AllocationRequest {
                bandwidth_kbit: Some(0),
                ..req("o", 60)
            },
            AllocationRequest {
                bandwidth_kbit: Some(MAX_BANDWIDTH_KBIT + 1),
                ..req("o", 60)
            },
            AllocationRequest {
                traffic_quota_mb: Some(0),
                ..req("o", 60)
            },
            AllocationRequest {
                traffic_quota_mb: Some(MAX_TRAFFIC_QUOTA_MB + 1),
                ..req("o", 60)
            },
        ] {
            assert!(
                matches!(normalize(bad.clone()), Err(AllocError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
