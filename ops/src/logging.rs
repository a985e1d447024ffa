//! Logging for both binaries: tracing to stderr, human-readable text (the default; colour
//! only on a terminal) or one JSON object per line for log collectors. The level filter is
//! `RUST_LOG` when set, else the config's `log.level` (RUST_LOG syntax), else `info`; the
//! protocol's `FRAME_LOG_GUARD` directives are added in every mode, because tungstenite
//! prints whole frames at TRACE.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// The `[log]` section both binaries accept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax (e.g. `info,farmhand_agent=debug`); `RUST_LOG` wins.
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
        EnvFilter::try_new(&self.level)
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

/// The filter: `RUST_LOG`, else `level`, else `info`, plus the frame-log guard.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(&spec).map_err(|e| format!("RUST_LOG {spec:?}: {e}"))?
        }
        _ => {
            let spec = level.unwrap_or("info");
            EnvFilter::try_new(spec).map_err(|e| format!("log level {spec:?}: {e}"))?
        }
    };
    for guard in farmhand_protocol::FRAME_LOG_GUARD {
        if let Ok(directive) = guard.parse() {
            filter = filter.add_directive(directive);
        }
    }
    Ok(filter)
}

/// Installs the global subscriber (once per process; later calls do nothing).
pub fn install(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            // No colour codes in the journal (systemd captures stderr) or in files.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    Ok(())
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
        }
    }
}
