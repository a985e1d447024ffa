//! Validation of allocation requests into their normalised form (the form compared for
//! idempotency): order id, duration, and the optional country / carrier / IMEI filters.

use super::AllocError;
use crate::store::AllocationRequest;

/// Shortest allocation, seconds.
pub const MIN_DURATION_S: u64 = 60;
/// Longest allocation (365 days), seconds.
pub const MAX_DURATION_S: u64 = 31_536_000;
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

/// An IMEI is 15 digits.
pub fn check_imei(imei: &str) -> Result<(), AllocError> {
    if imei.len() == 15 && imei.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid("imei must be 15 digits".to_string()))
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
        ] {
            assert!(
                matches!(normalize(bad.clone()), Err(AllocError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
