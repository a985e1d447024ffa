//! An error and all its sources on one line: reqwest and hyper hide the root cause (a
//! refused connection, a certificate problem) a few sources down.

/// An error and all its sources, joined with ": ".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
