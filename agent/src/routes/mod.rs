//! Route state: what is steered, and where each routing key goes.
//!
//! [`RouteSnapshot`] is plain data built in one place (the route updater)
//! from a route source's [`RouteInput`]: the routes file ([`watch`]) or the
//! Kubernetes API (`k8s`), each sending its input on the [`feed`]. The agent
//! swaps a new snapshot in whole; readers on the request path load it
//! without locks and look routes up in O(1).

mod decision;
pub mod feed;
mod file;
mod fork_pods;
mod input;
mod snapshot;
#[cfg(test)]
mod tests;
pub mod watch;

use std::path::{Path, PathBuf};

pub use decision::{Decision, Pick, Reason, Route};
pub use file::{Protocol, RoutesFile};
pub use fork_pods::ForkPods;
pub use input::{ForkInput, ForkPod, GroupInput, RouteInput, SandboxInput, ServiceInput};
pub use snapshot::{Destination, ForkTarget, Inherited, RouteSnapshot, Service, ServiceIds};

#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read routes file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML error is the message, not a `#[source]`: a chain printed
    /// with its causes would name it twice.
    #[error("routes file{}: {error}", in_path(path))]
    Parse {
        path: Option<PathBuf>,
        error: yaml_serde::Error,
    },
    #[error("routes file{}: {field}: {reason}", in_path(path))]
    Invalid {
        path: Option<PathBuf>,
        field: String,
        reason: String,
    },
}

fn in_path(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

impl RoutesError {
    /// Names the file an error was found in.
    pub fn in_file(mut self, file: &Path) -> Self {
        match &mut self {
            Self::Parse { path, .. } | Self::Invalid { path, .. } => *path = Some(file.to_owned()),
            Self::Read { .. } => {}
        }
        self
    }
}
