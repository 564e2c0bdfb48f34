//! Logging: `tracing` with structured fields, text or JSON, filtered by
//! `DETOUR_LOG` (EnvFilter syntax, default `info`) and changeable at run time
//! through the admin API (`detour log-level`). aya-log records from the eBPF
//! programs arrive through the `log` bridge.

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    EnvFilter, Layer, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

use crate::defaults::ENV_LOG;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl").finish_non_exhaustive()
    }
}

impl LogControl {
    /// Replaces the filter; returns it as now in force.
    pub fn set(&self, directive: &str) -> Result<String, String> {
        let filter = EnvFilter::builder()
            .parse(directive)
            .map_err(|e| format!("invalid log filter {directive:?}: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        self.current()
    }

    pub fn current(&self) -> Result<String, String> {
        self.handle
            .with_current(|f| f.to_string())
            .map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber. Returns whether debug logs are enabled
/// anywhere (which turns on the eBPF programs' own logs) and the control to
/// change the filter later.
pub fn init(format: LogFormat) -> (bool, Option<LogControl>) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .with_env_var(ENV_LOG)
        .from_env_lossy();
    let debug = filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG);
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // A second init (tests) is not an error worth failing for.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    (debug, installed.then_some(LogControl { handle }))
}
