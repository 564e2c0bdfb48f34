//! What every inspection verb shares: the global `-o table|json` and
//! `--socket` flags, printing to stdout (a closed pipe ends output quietly,
//! as `detour trace | head` expects), and the documented exit codes.
//!
//! Exit codes (stable; scripts may rely on them):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (the agent answered with an error, I/O, a bad answer) |
//! | 2 | usage: a bad flag or argument (clap), or a request the agent refused as invalid |
//! | 3 | the agent is not running or not reachable (no socket, stale socket, not a socket, no answer) |
//! | 4 | permission denied (the admin socket or the pinned maps need root) |
//! | 5 | not found: no pinned maps, or an unknown service or routing key |
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

use super::client::ClientError;
use crate::{datapath::pinned::PinnedError, defaults};

/// Exit codes, as documented above.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const PERMISSION: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
}

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

/// The exit code for an error: the first error in its chain that has one.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return client.exit_code();
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.code;
        }
        if let Some(pinned) = cause.downcast_ref::<PinnedError>() {
            return match pinned {
                PinnedError::Missing { .. } => exit::NOT_FOUND,
                PinnedError::Permission { .. } => exit::PERMISSION,
                PinnedError::Map { .. } => exit::FAILURE,
            };
        }
    }
    exit::FAILURE
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
