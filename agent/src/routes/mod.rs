//! Route state: what is steered, and (later) where each routing key goes.
//!
//! [`RouteSnapshot`] is plain data built in one place from a route source (the
//! routes file today). The agent swaps a new snapshot in whole; readers on the
//! request path load it without locks.

mod file;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use detour_common::{SockKey, Steered};
pub use file::{Protocol, RoutesFile};

#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read routes file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("routes file{}: {source}", in_path(path))]
    Parse {
        path: Option<PathBuf>,
        source: serde_yaml::Error,
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
    fn in_file(mut self, file: &Path) -> Self {
        match &mut self {
            Self::Parse { path, .. } | Self::Invalid { path, .. } => *path = Some(file.to_owned()),
            Self::Read { .. } => {}
        }
        self
    }
}

/// A steered service, as the proxy and metrics name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    /// Identifier carried through the kernel (`Steered::service_id`); never 0.
    pub id: u32,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One steered destination and how to treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Destination {
    pub service_id: u32,
    pub protocol: Protocol,
}

/// Everything the data path needs to know, as plain data.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RouteSnapshot {
    /// Services by id.
    pub services: BTreeMap<u32, Service>,
    /// Steered destinations (address:port) and the service each belongs to.
    pub destinations: BTreeMap<SocketAddr, Destination>,
}

impl RouteSnapshot {
    /// Builds a snapshot from a validated routes file. Service ids are
    /// assigned in file order, starting at 1.
    pub fn from_file(file: &RoutesFile) -> Self {
        let mut snapshot = Self::default();
        for (index, spec) in file.services.iter().enumerate() {
            let id = u32::try_from(index + 1).unwrap_or(u32::MAX);
            snapshot.services.insert(
                id,
                Service {
                    id,
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                },
            );
            for port in &spec.ports {
                for address in &spec.addresses {
                    snapshot.destinations.insert(
                        SocketAddr::new(*address, port.port),
                        Destination {
                            service_id: id,
                            protocol: port.protocol,
                        },
                    );
                }
            }
        }
        snapshot
    }

    /// The `STEERED` map entries this snapshot calls for.
    pub fn steered_entries(&self) -> BTreeMap<SockKey, Steered> {
        self.destinations
            .iter()
            .map(|(dst, d)| {
                (
                    SockKey::new(*dst),
                    Steered {
                        service_id: d.service_id,
                        flags: 0,
                    },
                )
            })
            .collect()
    }

    pub fn service(&self, id: u32) -> Option<&Service> {
        self.services.get(&id)
    }
}
