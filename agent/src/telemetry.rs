//! Logging: `tracing` with structured fields, text or JSON, filtered by
//! `DETOUR_LOG` (EnvFilter syntax, default `info`). aya-log records from the
//! eBPF programs arrive through the `log` bridge.

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::defaults::ENV_LOG;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Returns whether debug logs are enabled
/// anywhere, which turns on the eBPF programs' own logs.
pub fn init(format: LogFormat) -> bool {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .with_env_var(ENV_LOG)
        .from_env_lossy();
    let debug = filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests) is not an error worth failing for.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    debug
}
