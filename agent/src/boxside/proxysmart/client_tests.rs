//! The client's mapping of HTTP statuses to typed errors, and that a `StorePort` never
//! prints the buyer's password.

use super::*;

#[test]
fn status_codes_map_to_typed_errors() {
    assert_eq!(check_status(StatusCode::OK, "x"), Ok(()));
    assert!(matches!(
        check_status(StatusCode::UNAUTHORIZED, "x"),
        Err(ProxysmartError::Unauthorized { .. })
    ));
    assert!(matches!(
        check_status(StatusCode::NOT_FOUND, "x"),
        Err(ProxysmartError::NotFound { .. })
    ));
    assert!(matches!(
        check_status(StatusCode::BAD_GATEWAY, "x"),
        Err(ProxysmartError::Unavailable { .. })
    ));
    assert!(matches!(
        check_status(StatusCode::FOUND, "x"),
        Err(ProxysmartError::Malformed { .. })
    ));
    assert!(matches!(
        check_status(StatusCode::BAD_REQUEST, "x"),
        Err(ProxysmartError::Refused { .. })
    ));
}

#[test]
fn store_port_debug_masks_the_buyer_password() {
    let port = StorePort {
        IMEI: "356000000000001".into(),
        portID: "port0123456789".into(),
        portName: "farmhand-a".into(),
        proxy_login: "u".into(),
        proxy_password: Secret::new("buyer-canary"),
        http_port: 8001,
        socks_port: 5001,
        PROXY_VALID_BEFORE: String::new(),
        bandlimin: None,
        bandlimout: None,
        bw_quota: None,
        QUOTA_TYPE: None,
        QUOTA_DIRECTION: None,
    };
    assert!(!format!("{port:?}").contains("buyer-canary"));
    assert!(serde_json::to_string(&port)
        .unwrap()
        .contains("buyer-canary"));
}
