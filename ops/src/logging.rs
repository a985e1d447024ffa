//! Logging for both binaries: tracing to stderr, human-readable text (the default; colour
//! only on a terminal) or one JSON object per line for log collectors. The level filter is
//! `RUST_LOG` when set, else the config's `log.level` (RUST_LOG syntax), else `info`; the
//! protocol's `FRAME_LOG_GUARD` directives are added in every mode, because tungstenite
//! prints whole frames at TRACE.
//!
//! The filter is `filter::Targets` (`level` and `target=level` directives), not `EnvFilter`:
//! span and field filters are not worth the regex engine they bring, which was a tenth of
//! the agent's binary and so of its resident memory.

use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::{self, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The `[log]` section both binaries accept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax without span or field filters (e.g.
    /// `info,farmhand_agent=debug`); `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`; the `--log-format` flag wins.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogConfig {
    /// Checks that `level` is a valid filter (so a typo fails at start, not silently).
    pub fn check(&self) -> Result<(), String> {
        parse(&self.level)
            .map(drop)
            .map_err(|e| format!("{:?} is not a log filter: {e}", self.level))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, `target`, …).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use text or json)")),
        }
    }
}

/// Parses a filter: comma-separated `level` or `target=level` directives. A bare word that is
/// not a level names a target at TRACE, as in `RUST_LOG`; anything that is not a module path
/// (a typo such as `[[[`, or a span filter `foo[{id}]`) is refused rather than matching nothing.
/// The frame-log guard is part of every filter this returns.
pub fn parse(spec: &str) -> Result<Targets, String> {
    let directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    for &directive in &directives {
        let target = directive
            .split_once('=')
            .map_or(directive, |(target, _)| target);
        let path_like = target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-');
        if target.is_empty() || !path_like {
            return Err(format!(
                "{directive:?}: expected `level` or `target=level` (span and field filters are not supported)"
            ));
        }
    }
    let filter = directives
        .join(",")
        .parse::<Targets>()
        .map_err(|e| e.to_string())?;
    Ok(guarded(filter))
}

/// The filter: `RUST_LOG`, else `level`, else `info` (with the frame-log guard).
pub fn filter(level: Option<&str>) -> Result<Targets, String> {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            parse(&spec).map_err(|e| format!("RUST_LOG {spec:?}: {e}"))
        }
        _ => {
            let spec = level.unwrap_or("info");
            parse(spec).map_err(|e| format!("log level {spec:?}: {e}"))
        }
    }
}

/// `filter` with the frame-log guard: a directive for the same target replaces the
/// operator's, so the guard wins however verbose `RUST_LOG` is.
fn guarded(mut filter: Targets) -> Targets {
    for guard in farmhand_protocol::FRAME_LOG_GUARD {
        if let Some((target, level)) = guard.split_once('=') {
            if let Ok(level) = level.parse::<LevelFilter>() {
                filter = filter.with_target(target, level);
            }
        }
    }
    filter
}

/// Installs the global subscriber (once per process; later calls do nothing).
pub fn install(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = filter(level)?;
    let _ = match format {
        LogFormat::Text => {
            // No colour codes in the journal (systemd captures stderr) or in files.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            text_subscriber(filter, std::io::stderr, ansi).try_init()
        }
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    Ok(())
}

/// Human-readable lines to `writer`, through `filter` only. (`fmt()`'s builder would add
/// its own INFO ceiling under any filter layered on it.) Tests capture logs with this.
pub fn text_subscriber<W>(filter: Targets, writer: W, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(writer).with_ansi(ansi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_bad_levels_are_reported() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("yaml".parse::<LogFormat>().is_err());
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(filter(Some("debug,farmhand_agent=trace")).is_ok());
            assert!(filter(Some("[[[")).is_err());
            assert!(filter(Some("farmhand_agent[{id}]=debug")).is_err());
            assert!(filter(Some("info,farmhand_agent=loud")).is_err());
        }
        let parsed = parse("warn, farmhand_agent::session=debug,hyper").unwrap();
        assert!(parsed.would_enable("farmhand_agent::session", &tracing::Level::DEBUG));
        assert!(!parsed.would_enable("farmhand_agent::usage", &tracing::Level::INFO));
        assert!(parsed.would_enable("hyper::proto", &tracing::Level::TRACE));
    }

    #[test]
    fn the_frame_guard_beats_the_most_verbose_operator_filter() {
        let filter = parse("trace,tungstenite=trace,tokio_tungstenite=trace").unwrap();
        assert!(!filter.would_enable("tungstenite::protocol", &tracing::Level::TRACE));
        assert!(!filter.would_enable("tokio_tungstenite", &tracing::Level::DEBUG));
        assert!(filter.would_enable("farmhand_agent", &tracing::Level::TRACE));
    }
}
