//! One check's verdict — `OK`, `WARN`, `FAIL` (each with a fix hint) or `SKIP` — and how a
//! list of them is printed. Shared by `doctor`, `selftest` and the checks they run.

use std::fmt::Write;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; what was found.
    Ok(String),
    /// Failed: what is wrong and how to fix it.
    Fail {
        /// What is wrong.
        detail: String,
        /// What to do about it.
        fix: String,
    },
    /// Works, but something should be fixed before it bites: what and how.
    Warn {
        /// What is wrong.
        detail: String,
        /// What to do about it.
        fix: String,
    },
    /// Not applicable or not possible (e.g. after the config failed); why.
    Skip(String),
}

impl Outcome {
    /// A failure with a fix hint.
    pub fn fail(detail: impl Into<String>, fix: impl Into<String>) -> Outcome {
        Outcome::Fail {
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    /// A warning with a fix hint.
    pub fn warn(detail: impl Into<String>, fix: impl Into<String>) -> Outcome {
        Outcome::Warn {
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    /// Whether this is a failure.
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Fail { .. })
    }
}

/// One named check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `proxysmart`.
    pub name: &'static str,
    /// What it found.
    pub outcome: Outcome,
}

/// A named check.
pub fn check(name: &'static str, outcome: Outcome) -> Check {
    Check { name, outcome }
}

/// The report as printed.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = match &c.outcome {
            Outcome::Ok(what) => writeln!(out, "OK    {:<15} {what}", c.name),
            Outcome::Skip(why) => writeln!(out, "SKIP  {:<15} {why}", c.name),
            Outcome::Fail { detail, fix } => {
                writeln!(out, "FAIL  {:<15} {detail}\n      fix: {fix}", c.name)
            }
            Outcome::Warn { detail, fix } => {
                writeln!(out, "WARN  {:<15} {detail}\n      fix: {fix}", c.name)
            }
        };
    }
    let failed = checks.iter().filter(|c| c.outcome.failed()).count();
    let _ = match failed {
        0 => writeln!(out, "all checks passed"),
        n => writeln!(out, "{n} check(s) failed"),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_outcome_and_a_summary() {
        let text = render(&[
            check("config", Outcome::Ok("parses".into())),
            check("identity", Outcome::fail("not enrolled", "run enroll")),
            check("clock", Outcome::Skip("no Date header".into())),
        ]);
        assert!(text.contains("OK    config          parses"), "{text}");
        assert!(text.contains("FAIL  identity        not enrolled\n      fix: run enroll"));
        assert!(text.contains("SKIP  clock           no Date header"));
        assert!(text.ends_with("1 check(s) failed\n"), "{text}");
    }
}
