//! Addresses from Kubernetes objects: what is steered for a Service, and
//! where a fork's requests go, port by port.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{Pod, Service, ServicePort},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use super::crd::{Fork, fork_selector_labels};
use crate::routes::{ForkPod, Protocol};

/// The label EndpointSlices carry with their Service's name.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A port's `appProtocol` as the proxy's protocol (`http`; `kubernetes.io/h2c`
/// or `grpc`: HTTP/2; `tcp`; anything else is detected).
pub fn protocol_of(app_protocol: Option<&str>) -> Protocol {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "kubernetes.io/http") => Protocol::Http,
        Some("kubernetes.io/h2c" | "h2c" | "grpc") => Protocol::H2c,
        Some("tcp") => Protocol::Tcp,
        Some("kafka") => Protocol::Kafka,
        _ => Protocol::Auto,
    }
}

fn is_tcp(protocol: Option<&String>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

fn port_u16(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// The TCP ports of a Service.
fn tcp_ports(service: &Service) -> impl Iterator<Item = &ServicePort> {
    service
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .filter(|port| is_tcp(port.protocol.as_ref()))
}

/// The EndpointSlices of a Service.
fn slices_of<'a>(
    service: &'a Service,
    slices: &'a [Arc<EndpointSlice>],
) -> impl Iterator<Item = &'a EndpointSlice> {
    let namespace = service.namespace();
    let name = service.name_any();
    slices.iter().map(AsRef::as_ref).filter(move |slice| {
        slice.namespace() == namespace && slice.labels().get(SERVICE_NAME_LABEL) == Some(&name)
    })
}

/// Every destination steered for a Service: ClusterIPs at Service ports, and
/// baseline pod IPs (from its EndpointSlices, whatever their readiness) at
/// the slices' ports.
pub fn service_destinations(
    service: &Service,
    slices: &[Arc<EndpointSlice>],
) -> Vec<(SocketAddr, Protocol)> {
    destinations_where(service, slices, |_| true)
}

/// [`service_destinations`], of the Service's HTTP and Kafka ports only: HTTP declared
/// (`appProtocol` http, h2c, grpc) or named so (`http*`, `grpc*`, `h2c*`,
/// Istio's convention). A fork pod's connections to these reach the proxy
/// even when no sandbox forks the Service, so that its requests inherit
/// the sandbox's key; a port of any other protocol keeps going direct, and
/// a server that speaks first never waits for detection. Kafka ports
/// (`appProtocol: kafka`) likewise: a fork pod's consumers and producers
/// belong to its sandbox (docs/kafka.md).
pub fn fork_source_destinations(
    service: &Service,
    slices: &[Arc<EndpointSlice>],
) -> Vec<(SocketAddr, Protocol)> {
    destinations_where(service, slices, |port| {
        let Some(port) = port else {
            return false;
        };
        let declared = protocol_of(port.app_protocol.as_deref());
        let named = port.name.as_deref().is_some_and(|name| {
            ["http", "grpc", "h2c"]
                .iter()
                .any(|prefix| name.to_ascii_lowercase().starts_with(prefix))
        });
        matches!(declared, Protocol::Http | Protocol::H2c | Protocol::Kafka)
            || (declared == Protocol::Auto && named)
    })
}

fn destinations_where(
    service: &Service,
    slices: &[Arc<EndpointSlice>],
    keep: impl Fn(Option<&ServicePort>) -> bool,
) -> Vec<(SocketAddr, Protocol)> {
    let mut destinations = BTreeMap::new();
    let spec = service.spec.as_ref();
    let cluster_ips = spec
        .and_then(|s| {
            s.cluster_ips
                .clone()
                .or_else(|| s.cluster_ip.clone().map(|ip| vec![ip]))
        })
        .unwrap_or_default();
    for port in tcp_ports(service).filter(|port| keep(Some(port))) {
        let Some(number) = port_u16(port.port) else {
            continue;
        };
        for ip in cluster_ips
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
        {
            destinations.insert(
                SocketAddr::new(ip, number),
                protocol_of(port.app_protocol.as_deref()),
            );
        }
    }
    for slice in slices_of(service, slices) {
        for port in slice
            .ports
            .iter()
            .flatten()
            .filter(|p| is_tcp(p.protocol.as_ref()))
        {
            let Some(number) = port.port.and_then(port_u16) else {
                continue;
            };
            if !keep(tcp_ports(service).find(|sp| sp.name == port.name)) {
                continue;
            }
            // The slice port's own appProtocol, else the Service port of the same name.
            let app_protocol = port.app_protocol.clone().or_else(|| {
                tcp_ports(service)
                    .find(|sp| sp.name == port.name)
                    .and_then(|sp| sp.app_protocol.clone())
            });
            for endpoint in slice.endpoints.iter().flatten() {
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|ip| ip.parse::<IpAddr>().ok())
                {
                    destinations.insert(
                        SocketAddr::new(ip, number),
                        protocol_of(app_protocol.as_deref()),
                    );
                }
            }
        }
    }
    destinations.into_iter().collect()
}

/// The fork pods the agent watches (all carry the fork label).
pub struct ForkPods<'a> {
    pods: &'a [Arc<Pod>],
}

impl<'a> ForkPods<'a> {
    pub fn new(pods: &'a [Arc<Pod>]) -> Self {
        Self { pods }
    }

    /// A fork's endpoints by destination port: each Service port, and the
    /// baseline target port(s) its EndpointSlices give for it, map to the
    /// ready fork pods at the fork port.
    pub fn endpoints(
        &self,
        sandbox: (&str, &str),
        fork: &Fork,
        service: &Service,
        slices: &[Arc<EndpointSlice>],
    ) -> Result<BTreeMap<u16, Vec<SocketAddr>>, String> {
        let ready: Vec<(&Pod, IpAddr)> = self
            .selected(sandbox, fork, service)?
            .filter_map(|pod| Some((pod, ready_ip(pod)?)))
            .collect();

        let mut by_port = BTreeMap::new();
        for port in tcp_ports(service) {
            let Some(service_port) = port_u16(port.port) else {
                continue;
            };
            let target = match fork.ports.iter().find(|p| p.port == port.port) {
                Some(mapping) => IntOrString::Int(mapping.target_port),
                None => port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port)),
            };
            let endpoints: Vec<SocketAddr> = ready
                .iter()
                .filter_map(|(pod, ip)| Some(SocketAddr::new(*ip, container_port(pod, &target)?)))
                .collect();
            by_port.insert(service_port, endpoints.clone());
            for slice in slices_of(service, slices) {
                for slice_port in slice.ports.iter().flatten().filter(|p| p.name == port.name) {
                    if let Some(number) = slice_port.port.and_then(port_u16) {
                        by_port.entry(number).or_insert_with(|| endpoints.clone());
                    }
                }
            }
        }
        Ok(by_port)
    }

    /// The fork's pods on node `node`, ready or not (a pod is a fork from
    /// its first connect), while they may run: not finished.
    pub fn on_node(
        &self,
        sandbox: (&str, &str),
        fork: &Fork,
        service: &Service,
        node: &str,
    ) -> Result<Vec<ForkPod>, String> {
        Ok(self
            .selected(sandbox, fork, service)?
            .filter(|pod| pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter(|pod| {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .filter_map(|pod| {
                Some(ForkPod::Pod {
                    name: format!("{}/{}", pod.namespace()?, pod.name_any()),
                    uid: pod.uid()?,
                })
            })
            .collect())
    }

    /// The fork's pods, whatever their state. `sandbox` is the Sandbox's
    /// (namespace, name); the fork's pods are in its namespace (a
    /// `selector`) or in the Service's (`forkOf`: the controller made them,
    /// with the Sandbox's and the workload's labels).
    fn selected(
        &self,
        sandbox: (&str, &str),
        fork: &Fork,
        service: &Service,
    ) -> Result<impl Iterator<Item = &'a Pod> + use<'a>, String> {
        let service_namespace = service.namespace().unwrap_or_default();
        let (namespace, selector) = match (&fork.fork_of, &fork.selector) {
            (Some(workload), _) => (
                service_namespace,
                LabelSelector {
                    match_labels: Some(fork_selector_labels(sandbox.0, sandbox.1, &workload.name)),
                    ..LabelSelector::default()
                },
            ),
            (None, Some(selector)) => (sandbox.0.to_owned(), selector.clone()),
            (None, None) => {
                return Err(format!(
                    "fork of {}: neither forkOf nor selector; fork ignored",
                    fork.service.name
                ));
            }
        };
        let selector = Selector::try_from(selector).map_err(|e| {
            format!(
                "fork of {}: invalid selector ({e}); fork ignored",
                fork.service.name
            )
        })?;
        Ok(self.pods.iter().map(AsRef::as_ref).filter(move |pod| {
            pod.namespace().as_deref() == Some(namespace.as_str()) && selector.matches(pod.labels())
        }))
    }
}

/// The pod's IP if it is ready to serve: `Ready=True`, not terminating.
fn ready_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// A target port on one pod: a number as is, a name looked up among the
/// pod's container ports.
fn container_port(pod: &Pod, target: &IntOrString) -> Option<u16> {
    match target {
        IntOrString::Int(number) => port_u16(*number),
        IntOrString::String(name) => pod
            .spec
            .iter()
            .flat_map(|spec| spec.containers.iter())
            .flat_map(|container| container.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| port_u16(p.container_port)),
    }
}
