//! What every inspection verb shares: the global `-o table|json` and
//! `--socket` flags, printing to stdout (a closed pipe ends output quietly,
//! as `detour trace | head` expects), and failures that carry an exit code
//! ([`super::exit`]).
//!
//! JSON output is the admin API's wire types ([`crate::admin::api`]) for the
//! verbs that ask the agent, and the types in `bpf.rs`/`version.rs` for the
//! others: field names are stable, new fields may be added, none is renamed.

use std::{
    io::{ErrorKind, Write},
    path::PathBuf,
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::exit;
use crate::defaults;

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts (one object per line for `trace`).
    Json,
}

/// Flags every inspection verb takes, before or after the verb.
#[derive(Debug, Args)]
pub struct Global {
    /// Output format: `table` for people, `json` for scripts.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t,
        help_heading = "Global options"
    )]
    pub output: Format,

    /// The agent's admin socket (its `--admin-socket`).
    #[arg(
        long,
        global = true,
        env = "DETOUR_ADMIN_SOCKET",
        value_name = "PATH",
        default_value = defaults::ADMIN_SOCKET,
        help_heading = "Global options"
    )]
    pub socket: PathBuf,
}

/// An error with its own exit code, for failures found by the CLI itself.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn not_found(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            code: exit::NOT_FOUND,
            message: message.into(),
        })
    }
}

/// Writes `text` to stdout. `Ok(false)` when stdout is closed (the reader
/// went away): the caller stops producing output, and the exit is clean.
pub fn emit(text: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error).context("cannot write to stdout"),
    }
}

/// Prints `value` as indented JSON, followed by a newline.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    emit(&text)?;
    Ok(())
}

/// Prints `value` as JSON or as the table `render` makes of it.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    render: fn(&T) -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => json(value),
        Format::Table => emit(&render(value)).map(drop),
    }
}

/// `NAME` alone means `default/NAME`, as in Kubernetes.
pub fn service_name(service: &str) -> String {
    if service.contains('/') {
        service.to_owned()
    } else {
        format!("default/{service}")
    }
}
