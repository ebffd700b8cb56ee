//! Logging and tracing set-up.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where log lines go: standard output for the components (what container runtimes collect),
/// standard error for the operator's commands, whose standard output is their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), human output on a
/// terminal and JSON lines when `SWITCHBOARD_LOG_FORMAT=json`. Does nothing when a subscriber
/// is already installed (tests start many components in one process).
pub fn init_subscriber(logs: Logs) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn"));
    let json = std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let writer = move || -> Box<dyn std::io::Write> {
        match logs {
            Logs::Stdout => Box::new(std::io::stdout()),
            Logs::Stderr => Box::new(std::io::stderr()),
        }
    };
    let _ = if json {
        registry.with(tracing_subscriber::fmt::layer().json().with_current_span(false).with_writer(writer)).try_init()
    } else {
        let ansi = match logs {
            Logs::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
            Logs::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        registry.with(tracing_subscriber::fmt::layer().compact().with_ansi(ansi).with_writer(writer)).try_init()
    };
}
