//! The routes file (`detour agent --routes FILE`): its YAML model and the
//! checks that make a file either wholly valid or rejected.
//!
//! The format is the one in `docs/standalone.md` ("Routes file"). Unknown fields are errors, so a typo
//! never silently drops a route. Parse errors carry the YAML line and column
//! from `yaml_serde`; semantic errors name the field path.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::RoutesError;
use crate::http::routing_key::{MAX_KEY_LEN, is_valid_routing_key};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutesFile {
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub sandboxes: Vec<SandboxSpec>,
    #[serde(default)]
    pub route_groups: Vec<RouteGroupSpec>,
}

/// A baseline service whose destinations are steered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// ClusterIPs and/or baseline pod IPs.
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<PortSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSpec {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// How the proxy treats a steered port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    H2c,
    Tcp,
    /// Apache Kafka: relayed frame by frame (docs/kafka.md).
    Kafka,
    #[default]
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SandboxSpec {
    pub name: String,
    pub routing_key: String,
    #[serde(default)]
    pub forks: Vec<ForkSpec>,
    /// The cgroup v2 directories of the sandbox's fork pods on this node:
    /// their connects to the keyless services the sandbox forks go to the
    /// forks (see docs/sandboxes.md).
    #[serde(default)]
    pub pod_cgroups: Vec<PathBuf>,
    /// Whether requests without a routing key from its fork pods inherit
    /// its key (default true).
    #[serde(default = "yes")]
    pub inherit_key: bool,
}

fn yes() -> bool {
    true
}

/// Fork pods' cgroups are absolute cgroup v2 directories.
fn check_cgroups(cgroups: &[PathBuf], field: &str) -> Result<(), RoutesError> {
    for (j, cgroup) in cgroups.iter().enumerate() {
        if !cgroup.is_absolute() {
            return Err(invalid(
                format!("{field}[{j}]"),
                format!(
                    "{} is not an absolute path (write the cgroup v2 directory, e.g. \
                     /sys/fs/cgroup/...)",
                    cgroup.display()
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForkSpec {
    /// `namespace/name` of a service in `services`.
    pub service: String,
    pub endpoints: Vec<SocketAddr>,
    /// The cgroup v2 directories of this fork's own pods on this node: fork
    /// pods of the sandbox that still reach the baseline of this service's
    /// keyless ports, so that a fork can seed itself from baseline.
    #[serde(default)]
    pub pod_cgroups: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteGroupSpec {
    pub name: String,
    pub routing_key: String,
    pub sandboxes: Vec<String>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

impl RoutesFile {
    /// Reads, parses and validates a routes file.
    pub fn load(path: &Path) -> Result<Self, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|error| error.in_file(path))
    }

    /// Parses and validates routes-file text.
    pub fn parse(text: &str) -> Result<Self, RoutesError> {
        // An empty document is an empty configuration, not an error.
        let file: RoutesFile = if text.trim().is_empty() {
            RoutesFile::default()
        } else {
            yaml_serde::from_str(text).map_err(|error| RoutesError::Parse { path: None, error })?
        };
        file.validate()?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), RoutesError> {
        let mut names = BTreeSet::new();
        let mut destinations = BTreeSet::new();
        for (i, service) in self.services.iter().enumerate() {
            let field = |f: &str| format!("services[{i}].{f}");
            check_name(&service.name, &field("name"))?;
            check_name(&service.namespace, &field("namespace"))?;
            let id = format!("{}/{}", service.namespace, service.name);
            if !names.insert(id.clone()) {
                return Err(invalid(
                    field("name"),
                    format!("service {id} is listed twice"),
                ));
            }
            if service.addresses.is_empty() {
                return Err(invalid(
                    field("addresses"),
                    "at least one address is required",
                ));
            }
            if service.ports.is_empty() {
                return Err(invalid(field("ports"), "at least one port is required"));
            }
            // The kernel keys IPv4 destinations IPv4-mapped and hands the
            // proxy the plain IPv4 form: a mapped address here would be a
            // second name for an IPv4 destination that the proxy never finds.
            for (j, address) in service.addresses.iter().enumerate() {
                if let IpAddr::V6(v6) = address
                    && let Some(v4) = v6.to_ipv4_mapped()
                {
                    return Err(invalid(
                        field(&format!("addresses[{j}]")),
                        format!("{address} is an IPv4-mapped address: write {v4}"),
                    ));
                }
            }
            for (j, port) in service.ports.iter().enumerate() {
                if port.port == 0 {
                    return Err(invalid(
                        field(&format!("ports[{j}].port")),
                        "port 0 is not a port",
                    ));
                }
                for address in &service.addresses {
                    let dst = SocketAddr::new(*address, port.port);
                    if !destinations.insert(dst) {
                        return Err(invalid(
                            field(&format!("ports[{j}].port")),
                            format!("{dst} is already steered for another service or port"),
                        ));
                    }
                }
            }
        }

        let mut keys = BTreeSet::new();
        let mut sandboxes = BTreeSet::new();
        for (i, sandbox) in self.sandboxes.iter().enumerate() {
            let field = |f: &str| format!("sandboxes[{i}].{f}");
            check_name(&sandbox.name, &field("name"))?;
            if !sandboxes.insert(sandbox.name.as_str()) {
                return Err(invalid(
                    field("name"),
                    format!("sandbox {} is listed twice", sandbox.name),
                ));
            }
            check_key(&sandbox.routing_key, &field("routingKey"), &mut keys)?;
            check_cgroups(&sandbox.pod_cgroups, &field("podCgroups"))?;
            let mut forked = BTreeSet::new();
            for (j, fork) in sandbox.forks.iter().enumerate() {
                check_cgroups(&fork.pod_cgroups, &field(&format!("forks[{j}].podCgroups")))?;
                if !names.contains(&fork.service) {
                    return Err(invalid(
                        field(&format!("forks[{j}].service")),
                        format!(
                            "{:?} is not a service in `services` (write namespace/name)",
                            fork.service
                        ),
                    ));
                }
                // One fork would silently replace the other's endpoints.
                if !forked.insert(fork.service.as_str()) {
                    return Err(invalid(
                        field(&format!("forks[{j}].service")),
                        format!(
                            "{} is forked twice by sandbox {} (list all its endpoints in one fork)",
                            fork.service, sandbox.name
                        ),
                    ));
                }
            }
        }
        for (i, group) in self.route_groups.iter().enumerate() {
            let field = |f: &str| format!("routeGroups[{i}].{f}");
            check_name(&group.name, &field("name"))?;
            check_key(&group.routing_key, &field("routingKey"), &mut keys)?;
            for (j, member) in group.sandboxes.iter().enumerate() {
                if !sandboxes.contains(member.as_str()) {
                    return Err(invalid(
                        field(&format!("sandboxes[{j}]")),
                        format!("{member:?} is not a sandbox in `sandboxes`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_name(name: &str, field: &str) -> Result<(), RoutesError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            field.to_owned(),
            format!("{name:?} is not a Kubernetes name (lowercase letters, digits, '-', '.')"),
        ))
    }
}

fn check_key<'a>(
    key: &'a str,
    field: &str,
    seen: &mut BTreeSet<&'a str>,
) -> Result<(), RoutesError> {
    if !is_valid_routing_key(key) {
        return Err(invalid(
            field.to_owned(),
            format!(
                "{key:?} is not a routing key (1 to {MAX_KEY_LEN} bytes, no spaces or control characters)"
            ),
        ));
    }
    if !seen.insert(key) {
        return Err(invalid(
            field.to_owned(),
            format!("routing key {key:?} is used twice"),
        ));
    }
    Ok(())
}

fn invalid(field: String, reason: impl Into<String>) -> RoutesError {
    RoutesError::Invalid {
        path: None,
        field,
        reason: reason.into(),
    }
}
