//! Protocol versions and their negotiation.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks by preference.
pub const PROTOCOL_VERSION: u32 = 1;

/// The versions this build can speak; the first message of a connection offers a range and
/// the plane answers with the highest version both sides support.
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRange {
    /// Lowest version supported.
    pub min: u32,
    /// Highest version supported.
    pub max: u32,
}

impl VersionRange {
    /// The highest version in both ranges, if they overlap.
    pub fn negotiate(self, other: VersionRange) -> Option<u32> {
        let hi = self.max.min(other.max);
        let lo = self.min.max(other.min);
        (lo <= hi).then_some(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        let ours = VersionRange { min: 1, max: 3 };
        assert_eq!(ours.negotiate(VersionRange { min: 2, max: 5 }), Some(3));
        assert_eq!(ours.negotiate(VersionRange { min: 4, max: 5 }), None);
        assert_eq!(ours.negotiate(VersionRange { min: 1, max: 1 }), Some(1));
    }
}
