//! Field validation: the agent checks every field the plane sends before any of it reaches
//! ProxySmart — command ids, IMEIs, login/password/allocation-id charsets and lengths,
//! expiries (in the future, within a horizon), limits and the rotation interval, TCP port
//! numbers. Messages name the field, and never echo a password.

use crate::boxside::proxysmart::is_imei;
use farmhand_protocol::{Command, CommandBody, CommandError, CommandErrorCode, Provision};

/// Longest login, password or allocation id accepted.
pub const MAX_TOKEN_LEN: usize = 64;
/// Shortest buyer password accepted (the plane generates 24 characters).
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest command id accepted.
pub const MAX_COMMAND_ID_LEN: usize = 128;
// The audit clips ids to a bound of its own (it sits below the commands); every valid id
// and allocation id must fit it whole. Checked when the crate is built.
const _: () = assert!(
    MAX_COMMAND_ID_LEN <= crate::local::audit::MAX_FIELD_CHARS
        && MAX_TOKEN_LEN <= crate::local::audit::MAX_FIELD_CHARS
);
/// Furthest ahead an expiry may be: ten years, well past any renewal chain.
pub const MAX_EXPIRY_AHEAD_MS: u64 = 10 * 366 * 86_400_000;
/// Largest speed limit accepted, kbit/s (10 Gbit/s, far above any modem).
pub const MAX_BANDWIDTH_KBIT: u64 = 10_000_000;
/// Largest traffic quota accepted, MB (100 TB).
pub const MAX_TRAFFIC_QUOTA_MB: u64 = 100_000_000;
/// Longest automatic rotation interval accepted, seconds (one day). The shortest is 1: the
/// plane enforces its own minimum, and the seller's `min_rotation_interval_s` is the floor
/// the agent keeps whatever is asked (`autorotate`).
pub const MAX_ROTATE_EVERY_S: u64 = 86_400;
/// Lowest TCP port the agent lets ProxySmart listen on (no privileged ports).
pub use crate::boxside::ports::MIN_TCP_PORT;

/// Every field of `command`, judged at `now_ms` (the plane's clock): the executor's gate,
/// so no command body reaches a handler (and ProxySmart) unchecked.
pub fn command(command: &Command, now_ms: u64) -> Result<(), CommandError> {
    command_id(&command.id)?;
    match &command.body {
        CommandBody::Provision(p) => provision(p, now_ms),
        CommandBody::Release(r) => allocation_id(&r.allocation_id),
        CommandBody::RotateIp(r) => imei(&r.imei),
        CommandBody::UpdatePort(u) => {
            allocation_id(&u.allocation_id)?;
            expiry(u.expires_at_ms, now_ms)
        }
        CommandBody::Reconcile(r) => r.ports.iter().try_for_each(|d| {
            allocation_id(&d.allocation_id)?;
            imei(&d.imei)
        }),
    }
}

/// Every field of a `provision`, judged at `now_ms` (the plane's clock).
pub fn provision(p: &Provision, now_ms: u64) -> Result<(), CommandError> {
    allocation_id(&p.allocation_id)?;
    imei(&p.imei)?;
    token("login", &p.login)?;
    password(p.password.expose())?;
    expiry(p.expires_at_ms, now_ms)?;
    limit("bandwidth_kbit", p.bandwidth_kbit, MAX_BANDWIDTH_KBIT)?;
    limit("traffic_quota_mb", p.traffic_quota_mb, MAX_TRAFFIC_QUOTA_MB)?;
    limit("rotate_every_s", p.rotate_every_s, MAX_ROTATE_EVERY_S)
}

/// A command id: 1..=128 characters of `[A-Za-z0-9._:-]`. It keys the journal and the audit.
pub fn command_id(value: &str) -> Result<(), CommandError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if value.is_empty() || value.len() > MAX_COMMAND_ID_LEN || !value.chars().all(ok_char) {
        return Err(invalid(format!(
            "command id must be 1..={MAX_COMMAND_ID_LEN} characters of [A-Za-z0-9._:-]"
        )));
    }
    Ok(())
}

/// A buyer password: a token of at least [`MIN_PASSWORD_LEN`] characters.
pub fn password(value: &str) -> Result<(), CommandError> {
    token("password", value)?;
    if value.len() < MIN_PASSWORD_LEN {
        return Err(invalid(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// An expiry after `now_ms` and at most [`MAX_EXPIRY_AHEAD_MS`] later.
pub fn expiry(expires_at_ms: u64, now_ms: u64) -> Result<(), CommandError> {
    future(expires_at_ms, now_ms)?;
    if expires_at_ms - now_ms > MAX_EXPIRY_AHEAD_MS {
        return Err(invalid(format!(
            "expires_at_ms {expires_at_ms} is more than ten years ahead"
        )));
    }
    Ok(())
}

/// An optional limit: absent, or 1..=`max` (0 is refused: "no limit" is expressed by
/// leaving the field out, not by a value ProxySmart may read either way).
pub fn limit(field: &str, value: Option<u64>, max: u64) -> Result<(), CommandError> {
    match value {
        Some(v) if v == 0 || v > max => Err(invalid(format!("{field} must be 1..={max}"))),
        _ => Ok(()),
    }
}

/// A TCP port the agent may have ProxySmart listen on.
pub fn tcp_port(field: &str, port: u16) -> Result<(), CommandError> {
    if port < MIN_TCP_PORT {
        return Err(invalid(format!(
            "{field} {port} is outside {MIN_TCP_PORT}..=65535"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> CommandError {
    CommandError::new(CommandErrorCode::InvalidCommand, message)
}

/// An IMEI of 14 to 16 digits (with or without its check digit, or an IMEISV).
pub fn imei(value: &str) -> Result<(), CommandError> {
    if is_imei(value) {
        Ok(())
    } else {
        Err(invalid(format!("imei {value:?} is not 14 to 16 digits")))
    }
}

/// An allocation id: a token short enough that its port's name, `farmhand-<id>`, stays
/// within the 64 characters a box takes (it silently drops a port with a longer name).
pub fn allocation_id(value: &str) -> Result<(), CommandError> {
    token("allocation_id", value)?;
    if crate::boxside::ports::PORT_NAME_PREFIX.len() + value.len() > MAX_TOKEN_LEN {
        return Err(invalid(format!(
            "allocation_id must be at most {} characters (its port name must fit the box's {MAX_TOKEN_LEN})",
            MAX_TOKEN_LEN - crate::boxside::ports::PORT_NAME_PREFIX.len()
        )));
    }
    Ok(())
}

/// 1..=64 characters of `[A-Za-z0-9._-]`. The value is named, never echoed (it may be a
/// password).
pub fn token(field: &str, value: &str) -> Result<(), CommandError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.is_empty() || value.len() > MAX_TOKEN_LEN || !value.chars().all(ok_char) {
        return Err(invalid(format!(
            "{field} must be 1..={MAX_TOKEN_LEN} characters of [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}

/// An expiry strictly after `now_ms`.
pub fn future(expires_at_ms: u64, now_ms: u64) -> Result<(), CommandError> {
    if expires_at_ms <= now_ms {
        return Err(invalid(format!(
            "expires_at_ms {expires_at_ms} is not in the future"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_accept_the_charset_and_refuse_the_rest() {
        assert!(token("login", "buyer_1.a-b").is_ok());
        assert!(token("login", &"a".repeat(64)).is_ok());
        for bad in [
            "",
            "has space",
            "semi;colon",
            "ümlaut",
            "quote\"",
            &"a".repeat(65),
        ] {
            let err = token("password", bad).unwrap_err();
            assert_eq!(err.code, CommandErrorCode::InvalidCommand);
            assert!(
                !bad.is_empty() && !err.message.contains(bad) || bad.is_empty(),
                "never echo the value"
            );
        }
    }

    #[test]
    fn allocation_ids_leave_room_for_the_port_name() {
        assert!(allocation_id(&"a".repeat(55)).is_ok());
        let e = allocation_id(&"a".repeat(56)).unwrap_err();
        assert!(e.message.contains("55"), "{e:?}");
    }

    #[test]
    fn imei_and_expiry_checks() {
        for good in ["356000000000001", "35600000000000", "3560000000000011"] {
            assert!(imei(good).is_ok(), "{good}");
        }
        for bad in [
            "3560000000000",
            "35600000000000111",
            "35600000000000a",
            "",
            "３５６",
        ] {
            assert_eq!(
                imei(bad).unwrap_err().code,
                CommandErrorCode::InvalidCommand
            );
        }
        assert!(future(2000, 1000).is_ok());
        assert!(future(1000, 1000).is_err());
        assert!(expiry(1000 + MAX_EXPIRY_AHEAD_MS, 1000).is_ok());
        assert!(expiry(1001 + MAX_EXPIRY_AHEAD_MS, 1000).is_err());
        assert!(expiry(u64::MAX, 1000).is_err());
        assert!(expiry(999, 1000).is_err());
    }

    #[test]
    fn command_ids_passwords_limits_and_ports() {
        assert!(command_id("cmd-0123:abc_1.2").is_ok());
        for bad in ["", "a b", "a/b", "a\nb", &"c".repeat(129)] {
            assert!(command_id(bad).is_err(), "{bad:?}");
        }
        assert!(password("12345678").is_ok());
        let short = password("1234567").unwrap_err();
        assert!(short.message.contains("at least") && !short.message.contains("1234567"));
        assert!(password("pass word!").is_err());
        assert!(limit("bandwidth_kbit", None, 10).is_ok());
        assert!(limit("bandwidth_kbit", Some(10), 10).is_ok());
        assert!(limit("bandwidth_kbit", Some(0), 10).is_err());
        assert!(limit("bandwidth_kbit", Some(11), 10).is_err());
        assert!(tcp_port("http_port", 1024).is_ok() && tcp_port("http_port", 65535).is_ok());
        assert!(tcp_port("http_port", 0).is_err() && tcp_port("http_port", 1023).is_err());
    }

    #[test]
    fn provision_checks_every_field() {
        let now = 1_000_000;
        let good = Provision {
            allocation_id: "al-1".into(),
            imei: "356000000000001".into(),
            login: "buyer".into(),
            password: farmhand_protocol::Secret::new("Buyer-Pass-1234"),
            expires_at_ms: now + 1,
            bandwidth_kbit: Some(1000),
            traffic_quota_mb: Some(1000),
            rotate_every_s: Some(600),
        };
        assert!(provision(&good, now).is_ok());
        type Breaker = fn(&mut Provision);
        let variants: [(&str, Breaker); 9] = [
            ("allocation_id", |p| p.allocation_id = "a/b".into()),
            ("imei", |p| p.imei = "1".into()),
            ("login", |p| p.login = "a b".into()),
            ("password", |p| {
                p.password = farmhand_protocol::Secret::new("short")
            }),
            ("expires_at_ms", |p| p.expires_at_ms = 1),
            ("bandwidth_kbit", |p| p.bandwidth_kbit = Some(0)),
            ("traffic_quota_mb", |p| p.traffic_quota_mb = Some(u64::MAX)),
            ("rotate_every_s", |p| p.rotate_every_s = Some(0)),
            ("rotate_every_s", |p| {
                p.rotate_every_s = Some(MAX_ROTATE_EVERY_S + 1)
            }),
        ];
        for (field, break_it) in variants {
            let mut p = good.clone();
            break_it(&mut p);
            let e = provision(&p, now).unwrap_err();
            assert_eq!(e.code, CommandErrorCode::InvalidCommand);
            assert!(e.message.contains(field), "{field}: {e:?}");
        }
    }
}
