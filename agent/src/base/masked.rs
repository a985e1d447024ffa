//! A masked string for the ProxySmart admin password (and other local secrets).
//!
//! Unlike `farmhand_protocol::Secret` it is deliberately not `Serialize`: it can never be put
//! into a protocol message by accident. `Debug` and `Display` print a placeholder.

use std::fmt;

/// A secret whose `Debug`/`Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Masked(String);

impl Masked {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Masked(value.into())
    }

    /// The value; call only where it is put to use (the Basic-auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Masked(***)")
    }
}

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let m = Masked::new("canary-pw-123");
        assert!(!format!("{m:?} {m}").contains("canary"));
        assert_eq!(m.expose(), "canary-pw-123");
    }
}
