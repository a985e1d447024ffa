//! What a port must look like on the box, and the comparisons that tell whether the box
//! took a write — in the box's own forms and units, never as exact strings:
//! - the expiry is written to the minute (`YYYY-MM-DDTHH:MM`, box-local, rounded up so a
//!   buyer never loses time) and read back as a time, whether the box shows seconds,
//!   minutes or only a date;
//! - the quota (`bw_quota`, MB) is sent with the only `QUOTA_TYPE`/`QUOTA_DIRECTION` values
//!   a box was seen to take, and read back from `bw_quota` (a number, as the box took it)
//!   or `QUOTA` (a plain number in MB or bytes, or a human string within display rounding,
//!   in decimal or binary megabytes). A quota asked for and not shown is a refusal: the
//!   buyer would get unlimited traffic;
//! - speed limits (`bandlimin`/`bandlimout`, kbit/s) are compared when the box lists them;
//!   the listings seen on live boxes never do, and then they cannot be checked.

use crate::boxside::proxysmart::counters::human_bytes;
use crate::boxside::proxysmart::{BoxClock, PortEntry, StorePort};
use crate::local::journal::PortLimits;
use farmhand_protocol::{CommandError, CommandErrorCode};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Date, PrimitiveDateTime};

/// `QUOTA_TYPE` sent with a quota: the only value a box was seen to take. A box counting a
/// monthly quota restarts it each month; the plane meters the allocation's lifetime total
/// itself (`usage`), so an allocation longer than a month is not left unlimited.
pub const QUOTA_TYPE: &str = "monthly";
/// `QUOTA_DIRECTION` sent with a quota: downloads and uploads together, as seen on boxes.
pub const QUOTA_DIRECTION: &str = "inout";
/// How far a quota shown with a unit may be from the one asked for (display rounding).
const TOLERANCE: f64 = 0.02;
/// How far a shown expiry may be from the one written (the box may keep only minutes).
const EXPIRY_SLACK_S: i64 = 60;
/// The lowest TCP port the agent lets a port use.
pub const MIN_TCP_PORT: u16 = 1024;

const SECONDS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
const MINUTES: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]");
const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Sets the limits on `store` (speed both ways; the quota with its type and direction).
pub fn apply_limits(store: &mut StorePort, limits: &PortLimits) {
    store.bandlimin = limits.bandwidth_kbit;
    store.bandlimout = limits.bandwidth_kbit;
    store.bw_quota = limits.traffic_quota_mb;
    store.QUOTA_TYPE = limits.traffic_quota_mb.map(|_| QUOTA_TYPE);
    store.QUOTA_DIRECTION = limits.traffic_quota_mb.map(|_| QUOTA_DIRECTION);
}

/// `unix_ms` as the box's `PROXY_VALID_BEFORE`: box-local, to the minute, rounded up.
pub fn box_expiry(clock: &BoxClock, unix_ms: u64) -> Result<String, CommandError> {
    let rounded = unix_ms.div_ceil(60_000).saturating_mul(60_000);
    let stamp = clock.stamp(rounded).ok_or_else(|| {
        CommandError::new(CommandErrorCode::InvalidCommand, "expiry out of range")
    })?;
    Ok(stamp.chars().take(16).collect())
}

/// A box timestamp in any form boxes show: seconds, minutes, or a date (its midnight).
pub(super) fn parse_stamp(text: &str) -> Option<(PrimitiveDateTime, bool)> {
    let text = text.trim().replace(' ', "T");
    if let Ok(t) = PrimitiveDateTime::parse(&text, SECONDS) {
        return Some((t, false));
    }
    if let Ok(t) = PrimitiveDateTime::parse(&text, MINUTES) {
        return Some((t, false));
    }
    let date = Date::parse(&text, DATE).ok()?;
    Some((PrimitiveDateTime::new(date, time::Time::MIDNIGHT), true))
}

/// Whether the expiry the box shows is the one written (`expected`, as `box_expiry` wrote
/// it): within a minute, or — a box that keeps only dates — that day or the next.
pub fn expiry_matches(shown: &str, expected: &str) -> bool {
    let (Some((shown, date_only)), Some((expected, _))) =
        (parse_stamp(shown), parse_stamp(expected))
    else {
        return false;
    };
    let diff = (shown - expected).whole_seconds();
    if date_only {
        let day = expected.date();
        return shown.date() == day || day.next_day() == Some(shown.date());
    }
    diff.abs() <= EXPIRY_SLACK_S
}

/// The expiry `store` wrote is on the box (or the box keeps none: noted elsewhere).
pub fn expiry_only(port: &PortEntry, store: &StorePort) -> Result<(), CommandError> {
    if port.valid_before.is_empty() || expiry_matches(&port.valid_before, &store.PROXY_VALID_BEFORE)
    {
        return Ok(());
    }
    Err(CommandError::box_refused(
        "PROXY_VALID_BEFORE",
        format!(
            "the box shows PROXY_VALID_BEFORE {:?} for port {}, not {:?}",
            shorten(&port.valid_before),
            port.port_id,
            store.PROXY_VALID_BEFORE
        ),
    ))
}

/// The port carries the buyer's credentials.
pub fn credentials(port: &PortEntry, want: &super::Want) -> Result<(), CommandError> {
    let field = if port.login != want.login {
        "proxy_login"
    } else if port.password.expose() != want.password.expose() {
        "proxy_password"
    } else {
        return Ok(());
    };
    Err(CommandError::box_refused(
        field,
        format!(
            "the box keeps credentials of its own for port {} (it did not take {field})",
            port.port_id
        ),
    ))
}

/// The port's HTTP and SOCKS numbers, when both are usable.
pub fn pair(port: &PortEntry) -> Result<(u16, u16), CommandError> {
    let usable = |p: Option<u16>| p.filter(|n| *n >= MIN_TCP_PORT);
    match (usable(port.http_port), usable(port.socks_port)) {
        (Some(http), Some(socks)) if http != socks => Ok((http, socks)),
        _ => Err(CommandError::new(
            CommandErrorCode::ProxysmartMalformed,
            format!("port {} has unreadable HTTP/SOCKS numbers", port.port_id),
        )),
    }
}

/// Whether the quota asked for is on the box; `None` when none was asked for.
pub fn quota(port: &PortEntry, limits: &PortLimits) -> Option<Result<(), CommandError>> {
    let mb = limits.traffic_quota_mb?;
    let by_bw_quota = port
        .bw_quota
        .as_deref()
        .and_then(|v| v.trim().parse::<u64>().ok())
        == Some(mb);
    if by_bw_quota || quota_matches(&port.quota, mb) {
        return Some(Ok(()));
    }
    Some(Err(CommandError::box_refused(
        "bw_quota",
        format!(
            "the box did not take bw_quota {mb} MB for port {} (QUOTA shows {:?}, bw_quota {:?})",
            port.port_id,
            shorten(&port.quota),
            port.bw_quota.as_deref().map(shorten)
        ),
    )))
}

/// Whether `QUOTA` as shown is `mb` megabytes.
fn quota_matches(shown: &str, mb: u64) -> bool {
    let shown = shown.trim();
    if let Ok(n) = shown.parse::<u64>() {
        return n == mb || Some(n) == mb.checked_mul(1_000_000);
    }
    let Some(bytes) = human_bytes(shown) else {
        return false;
    };
    let close = |unit: f64| {
        let asked = mb as f64 * unit;
        (bytes as f64 - asked).abs() <= asked * TOLERANCE
    };
    close(1_000_000.0) || close(1_048_576.0)
}

/// Whether the speed limit asked for is on the box; `None` when none was asked for or the
/// box does not list limits (then it cannot be checked).
pub fn speed(port: &PortEntry, limits: &PortLimits) -> Option<Result<(), CommandError>> {
    let kbit = limits.bandwidth_kbit?;
    for (field, shown) in [
        ("bandlimin", &port.bandlimin),
        ("bandlimout", &port.bandlimout),
    ] {
        let shown = shown.as_deref()?;
        if shown.trim().parse::<u64>().ok() != Some(kbit) {
            return Some(Err(CommandError::box_refused(
                field,
                format!(
                    "the box did not take {field} {kbit} for port {} (shows {:?})",
                    port.port_id,
                    shorten(shown)
                ),
            )));
        }
    }
    Some(Ok(()))
}

/// After a re-store of an existing port: the box shows what `store` wrote (pair, expiry,
/// limits).
pub fn stored_as(port: &PortEntry, store: &StorePort) -> Result<(), CommandError> {
    if port.http_port != Some(store.http_port) || port.socks_port != Some(store.socks_port) {
        return Err(CommandError::box_refused(
            "http_port",
            format!("the box changed the ports of {}", port.port_id),
        ));
    }
    expiry_only(port, store)?;
    let limits = PortLimits {
        bandwidth_kbit: store.bandlimin,
        traffic_quota_mb: store.bw_quota,
    };
    quota(port, &limits).unwrap_or(Ok(()))?;
    speed(port, &limits).unwrap_or(Ok(()))
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
