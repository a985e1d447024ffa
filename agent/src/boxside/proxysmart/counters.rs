//! ProxySmart's traffic counters as numbers. `bandwidth_report_all` prints them for people:
//! `"21.1 GB"` (decimal units: 1 GB = 10^9 bytes), and other forms occur — `"512 B"`,
//! `"1.2KB"`, `"3 mb"`, binary units (`"1.5 MiB"`), a decimal comma (`"21,1 GB"`), a plain
//! number of bytes (`12345` or `"12345"`), `null`, or the number `0` around the nightly
//! reset. Everything that is not one of those is an error for that one value: it is skipped,
//! and the caller decides when to log it (the value, never the body;
//! `usage::meter::UnreadableCounters` logs a counter when it becomes unreadable, not every
//! round it stays so). `ports` reads a port's quota with the same [`human_bytes`].

use serde_json::Value;

/// The counter of downloads (towards the buyer) the agent meters on a box without lifetime
/// totals: today's, which resets at midnight and when the box restarts (the meter folds
/// resets into running totals).
pub const IN_KEY: &str = "bandwidth_bytes_day_in";
/// The counter of uploads (from the buyer) the agent meters on such a box.
pub const OUT_KEY: &str = "bandwidth_bytes_day_out";
/// The totals that survive the nightly reset, on boxes that have them (preferred: fewer
/// resets to fold, nothing lost around midnight). Seen as `bandwidth_bytes_lifetime_*` and
/// as `lifetime_*`.
pub const LIFETIME_KEYS: [(&str, &str); 2] = [
    (
        "bandwidth_bytes_lifetime_in",
        "bandwidth_bytes_lifetime_out",
    ),
    ("lifetime_in", "lifetime_out"),
];
/// Every counter the agent may read, for the bookkeeping of unreadable ones.
pub const COUNTER_KEYS: [&str; 6] = [
    IN_KEY,
    OUT_KEY,
    LIFETIME_KEYS[0].0,
    LIFETIME_KEYS[0].1,
    LIFETIME_KEYS[1].0,
    LIFETIME_KEYS[1].1,
];
/// Longest value quoted in an error.
const SHOWN_CHARS: usize = 40;

/// A counter value that is neither a byte count nor "no reading".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable traffic counter {shown}")]
pub struct BadCounter {
    /// The value as JSON, cut to a few dozen characters.
    pub shown: String,
}

/// One port's readings; `None` where the box had no (usable) value this time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Bytes towards the buyer.
    pub bytes_in: Option<u64>,
    /// Bytes from the buyer.
    pub bytes_out: Option<u64>,
}

/// Reads one port's entry of `bandwidth_report_all`: the counters, with unreadable values
/// skipped (`None`), and which counters were unreadable and why. A box whose entries carry
/// lifetime totals is read from those — always, also in a round where they read null —
/// and any other from the day counters: the meter must see one counter per port, or a
/// switch would look like a reset and count twice.
pub fn port_counters(entry: &Value) -> (PortCounters, Vec<(&'static str, BadCounter)>) {
    let (in_key, out_key) = LIFETIME_KEYS
        .into_iter()
        .find(|(i, o)| entry.get(*i).is_some() || entry.get(*o).is_some())
        .unwrap_or((IN_KEY, OUT_KEY));
    let mut unreadable = Vec::new();
    let mut read = |key: &'static str| match entry.get(key).map_or(Ok(None), counter) {
        Ok(bytes) => bytes,
        Err(e) => {
            unreadable.push((key, e));
            None
        }
    };
    let counters = PortCounters {
        bytes_in: read(in_key),
        bytes_out: read(out_key),
    };
    (counters, unreadable)
}

/// One counter: `Ok(Some(bytes))`, `Ok(None)` for "no reading" (`null`, `""`, `"-"`,
/// `"n/a"`), or an error.
pub fn counter(value: &Value) -> Result<Option<u64>, BadCounter> {
    let bad = || BadCounter {
        shown: value.to_string().chars().take(SHOWN_CHARS).collect(),
    };
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(bytes), _) => Ok(Some(bytes)),
            (None, Some(f)) => to_bytes(f).map(Some).ok_or_else(bad),
            (None, None) => Err(bad()),
        },
        Value::String(text) => {
            let text = text.trim();
            if matches!(
                text.to_ascii_lowercase().as_str(),
                "" | "-" | "n/a" | "null"
            ) {
                return Ok(None);
            }
            human_bytes(text).map(Some).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// `"21.1 GB"`, `"1.2KB"`, `"3 mb"`, `"1.5 MiB"`, `"21,1 GB"`, `"1,234,567 B"`,
/// `"12345"` → bytes. A lone comma followed by one or two digits is a decimal comma; other
/// commas separate thousands. Units are case-insensitive; `k`/`m`/`g`/`t`/`p` alone are
/// the decimal units.
pub fn human_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = normalise_number(number)?.parse().ok()?;
    to_bytes(value * unit_size(unit.trim())?)
}

/// The number with a decimal point and without thousands separators.
fn normalise_number(number: &str) -> Option<String> {
    if number.is_empty() || number.starts_with([',', '.']) {
        return None;
    }
    let commas = number.matches(',').count();
    let decimal_comma = commas == 1
        && !number.contains('.')
        && number
            .split_once(',')
            .is_some_and(|(_, after)| (1..=2).contains(&after.len()));
    if decimal_comma {
        return Some(number.replace(',', "."));
    }
    // Thousands separators: groups of exactly three digits after the first.
    let mut groups = number.split('.').next()?.split(',');
    let first = groups.next()?;
    if first.is_empty() || groups.any(|g| g.len() != 3) {
        return None;
    }
    Some(number.replace(',', ""))
}

/// Bytes per unit.
fn unit_size(unit: &str) -> Option<f64> {
    const K: f64 = 1000.0;
    const KI: f64 = 1024.0;
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "k" | "kb" => K,
        "m" | "mb" => K * K,
        "g" | "gb" => K * K * K,
        "t" | "tb" => K * K * K * K,
        "p" | "pb" => K * K * K * K * K,
        "kib" => KI,
        "mib" => KI * KI,
        "gib" => KI * KI * KI,
        "tib" => KI * KI * KI * KI,
        "pib" => KI * KI * KI * KI * KI,
        _ => return None,
    })
}

/// A finite, non-negative amount as whole bytes (rounded), if it fits in a u64.
fn to_bytes(value: f64) -> Option<u64> {
    // 1.8e19 is just below u64::MAX; `as` saturates, so refuse rather than clamp.
    (value.is_finite() && (0.0..1.8e19).contains(&value)).then(|| value.round() as u64)
}

#[cfg(test)]
#[path = "counters_tests.rs"]
mod tests;
