//! Logging: human-readable by default, JSON lines with `--log-format json`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let ansi = wants_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Colour is for a person at a terminal: a log redirected to a file or a pipe stays
/// plain text to grep, and a non-empty `NO_COLOR` turns it off everywhere (no-color.org).
fn wants_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::wants_colour;
    use std::ffi::OsStr;

    #[test]
    fn it_should_colour_only_a_terminal() {
        assert!(wants_colour(true, None));
        assert!(!wants_colour(false, None));
    }

    #[test]
    fn it_should_honour_a_non_empty_no_color() {
        assert!(!wants_colour(true, Some(OsStr::new("1"))));
        assert!(wants_colour(true, Some(OsStr::new(""))));
    }
}
