//! What the agent says it is: the version reported in `hello` and on the metrics page, and
//! the commit the binary was built from (`build.rs`).

/// The agent's version, reported in `hello`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`build.rs`), or "unknown".
pub const GIT_COMMIT: &str = env!("FARMHAND_GIT_COMMIT");
/// What `--version` prints after the program name: `0.1.0 (commit abc1234)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FARMHAND_GIT_COMMIT"),
    ")"
);
