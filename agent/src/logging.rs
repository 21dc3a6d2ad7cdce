//! Log output: human text or one JSON object per line, on stderr. Colour only when stderr is a
//! terminal, so journald and `kubectl logs` never receive escape codes.

use std::io::IsTerminal as _;

use crate::config::ConfigError;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(ConfigError {
                flag: "log-format",
                problem: format!("{other:?} is not a log format"),
                fix: "write text or json",
            }),
        }
    }
}

/// Whether text logs may carry ANSI colour: only to a terminal, and never under `NO_COLOR`
/// (<https://no-color.org>: any non-empty value).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
    stderr_is_terminal && no_color.is_none_or(str::is_empty)
}

/// Installs the global subscriber. The filter comes from `AZFLOW_LOG` (tracing's directive
/// syntax); the AWS SDK's own chatter is kept to errors by default.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AZFLOW_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,aws_config=error,aws_runtime=error")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Field names stay flat (`"cgroup":…` beside `"message"`), as log shippers expect.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => {
            let no_color = std::env::var("NO_COLOR").ok();
            builder
                .with_ansi(colour(std::io::stderr().is_terminal(), no_color.as_deref()))
                .init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_a_bad_one_names_the_flag_and_the_fix() {
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        let e = LogFormat::parse("logfmt").expect_err("logfmt is not offered");
        assert_eq!(
            e.to_string(),
            "--log-format: \"logfmt\" is not a log format; write text or json"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("")));
        assert!(!colour(true, Some("1")));
        assert!(!colour(false, None));
    }
}
