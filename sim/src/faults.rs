//! Injectable faults of the ProxySmart API (never of `/_sim/` or of the proxies) and the
//! canned bodies a broken box answers with.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A fault applied to every ProxySmart API request until replaced by `Fault::None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave normally.
    #[default]
    None,
    /// Delay every API reply by this long, then answer normally.
    Latency(Duration),
    /// HTTP 500 with an nginx-style HTML page.
    Status500,
    /// HTTP 200 with an HTML maintenance page instead of JSON.
    Html,
    /// HTTP 200 with a non-JSON body.
    Garbage,
    /// Never answer (until the simulator shuts down).
    Hang,
    /// Close API connections at once without a byte of reply.
    Refuse,
    /// The next N API calls answer HTTP 500, then the box is healthy again.
    FailNext(u32),
}

/// A fault of one write endpoint, on top of (and independent of) [`Fault`]: the box answers
/// the rest normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// `apply_port` answers `{"result":"error","message":"modem is busy"}`.
    ApplyRefused,
    /// `purge_port` answers an error and keeps the port (and the web panel's delete keeps
    /// it too, answering its usual 302).
    PurgeRefused,
    /// `store_port` stores the port, then does not answer for 30 s (outcome unknown).
    StoreThenHang,
}

/// The admin interface's JSON form of a [`Fault`]: `{"kind":"latency","ms":500}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    pub kind: String,
    #[serde(default)]
    pub ms: u64,
    /// For `fail_next`: how many calls fail.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Fault {
    pub(crate) fn from_spec(spec: &FaultSpec) -> Option<Fault> {
        Some(match spec.kind.as_str() {
            "none" => Fault::None,
            "latency" => Fault::Latency(Duration::from_millis(spec.ms)),
            "status500" => Fault::Status500,
            "html" => Fault::Html,
            "garbage" => Fault::Garbage,
            "hang" => Fault::Hang,
            "refuse" => Fault::Refuse,
            "fail_next" => Fault::FailNext(spec.count),
            _ => return None,
        })
    }

    pub(crate) fn to_spec(self) -> FaultSpec {
        let (kind, ms) = match self {
            Fault::FailNext(count) => {
                return FaultSpec {
                    kind: "fail_next".to_string(),
                    ms: 0,
                    count,
                }
            }
            Fault::None => ("none", 0),
            Fault::Latency(d) => ("latency", u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Fault::Status500 => ("status500", 0),
            Fault::Html => ("html", 0),
            Fault::Garbage => ("garbage", 0),
            Fault::Hang => ("hang", 0),
            Fault::Refuse => ("refuse", 0),
        };
        FaultSpec {
            kind: kind.to_string(),
            ms,
            count: 0,
        }
    }
}

/// nginx's 500 page.
pub(crate) const PAGE_500: &str = "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n\
<body>\r\n<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// A maintenance page served with status 200 — must not be taken for data.
pub(crate) const PAGE_MAINTENANCE: &str = "<!DOCTYPE html>\n<html><head><title>ProxySmart - maintenance</title></head>\n\
<body><h1>Maintenance</h1><p>The proxy box is being updated. Please come back later.</p></body></html>\n";

/// Neither JSON nor HTML: a truncated Python traceback.
pub(crate) const GARBAGE: &str = "Traceback (most recent call last):\n  File \"/usr/lib/proxysmart/app.py\", line 4\x00\x01{\"result\": \"succ";

/// nginx's 401 page.
pub(crate) const PAGE_401: &str = "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n\
<body>\r\n<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips() {
        for f in [
            Fault::None,
            Fault::Latency(Duration::from_millis(250)),
            Fault::Status500,
            Fault::Html,
            Fault::Garbage,
            Fault::Hang,
            Fault::Refuse,
            Fault::FailNext(3),
        ] {
            assert_eq!(Fault::from_spec(&f.to_spec()), Some(f));
        }
        let bad = FaultSpec {
            kind: "explode".into(),
            ms: 0,
            count: 0,
        };
        assert_eq!(Fault::from_spec(&bad), None);
    }
}
