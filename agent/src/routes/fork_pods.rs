//! What the fork programs need of a snapshot: for each sandbox with fork
//! pods on this node, their cgroups and the keyless destinations it forks.
//!
//! A destination is keyless when its port is declared `tcp`: nothing in its
//! bytes can carry a routing key, so which backend a connection reaches is
//! decided at `connect()` from who connects. A fork pod's connect to it goes
//! to the sandbox's fork; everyone else's goes where it was addressed.
//!
//! One exception: a fork's own pods reach the baseline of the service they
//! fork. That is how a fork seeds itself (a database fork's init container
//! copies the baseline's data), and no fork talks to itself through its
//! Service. So the pods of a sandbox fall into groups with their own
//! destinations, one load of the fork programs each: the pods of each fork
//! (without that fork's service), and the pods of none in particular.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use detour_common::{NO_FORK_ENDPOINT, SockKey};
use serde::Serialize;

use super::{ForkPod, Protocol, RouteInput, SandboxInput};

/// A group of one sandbox's fork pods on this node, and where their keyless
/// connects go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForkPods {
    /// The sandbox they belong to.
    pub sandbox: Arc<str>,
    /// The service whose fork they are, if one: its destinations are not
    /// in `deps`.
    pub fork_of: Option<String>,
    /// The pods, by cgroup or by Kubernetes pod.
    pub pods: BTreeSet<ForkPod>,
    /// Baseline destination -> the fork endpoint its connects go to, or
    /// [`NO_FORK_ENDPOINT`] while the fork has none ready (refused).
    #[serde(skip)]
    pub deps: BTreeMap<SockKey, SockKey>,
    /// The sandbox's id, which marks its pods' connects so that their
    /// requests inherit its key; 0: they inherit none (opted out).
    pub inherit_as: u32,
}

/// The groups of fork pods of every sandbox that has some on this node and
/// forks a keyless destination or lends its key, by a name unique to each
/// group: the sandbox's, with `#<service>` for a fork's own pods.
pub fn fork_pods(
    input: &RouteInput,
    inheriting: &HashMap<&str, u32>,
) -> BTreeMap<Arc<str>, ForkPods> {
    let mut all = BTreeMap::new();
    for sandbox in &input.sandboxes {
        let name: Arc<str> = Arc::from(sandbox.name.as_str());
        let inherit_as = inheriting.get(sandbox.name.as_str()).copied().unwrap_or(0);
        let deps = keyless_deps(input, sandbox);
        let groups = std::iter::once((None, &sandbox.fork_pods)).chain(
            sandbox
                .forks
                .iter()
                .map(|fork| (Some(&fork.service), &fork.pods)),
        );
        for (fork_of, pods) in groups {
            if pods.is_empty() {
                continue;
            }
            let group = ForkPods {
                sandbox: Arc::clone(&name),
                fork_of: fork_of.cloned(),
                pods: pods.iter().cloned().collect(),
                deps: deps
                    .iter()
                    .filter(|(service, _)| Some(*service) != fork_of)
                    .flat_map(|(_, deps)| deps.iter().map(|(k, v)| (*k, *v)))
                    .collect(),
                inherit_as,
            };
            // Nothing keyless forked and nothing to inherit: nothing for
            // the fork programs to do.
            if group.deps.is_empty() && group.inherit_as == 0 {
                continue;
            }
            let key = match fork_of {
                None => Arc::clone(&name),
                Some(service) => Arc::from(format!("{name}#{service}")),
            };
            all.insert(key, group);
        }
    }
    all
}

/// The sandbox's keyless forked destinations, by the service they belong to.
fn keyless_deps<'a>(
    input: &RouteInput,
    sandbox: &'a SandboxInput,
) -> Vec<(&'a String, BTreeMap<SockKey, SockKey>)> {
    let mut all = Vec::new();
    for fork in &sandbox.forks {
        let Some(service) = input.services.iter().find(|s| s.label() == fork.service) else {
            continue;
        };
        let mut deps = BTreeMap::new();
        for (dst, protocol) in &service.destinations {
            if *protocol != Protocol::Tcp {
                continue;
            }
            let endpoints = fork.by_port.get(&dst.port()).unwrap_or(&fork.endpoints);
            // The lowest ready endpoint, so that every connect of the
            // sandbox reaches the same fork (a database has one writer).
            let endpoint = endpoints
                .iter()
                .min()
                .map_or(NO_FORK_ENDPOINT, |e| SockKey::new(*e));
            deps.insert(SockKey::new(*dst), endpoint);
        }
        all.push((&fork.service, deps));
    }
    all
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::routes::{RouteSnapshot, RoutesFile, ServiceIds};

    const FILE: &str = r#"
services:
  - name: db
    addresses: [10.96.0.5, "fd00:96::5"]
    ports: [{port: 5432, protocol: tcp}, {port: 6379, protocol: tcp}, {port: 8080, protocol: http}]
  - name: cache
    addresses: [10.96.0.6]
    ports: [{port: 11211, protocol: tcp}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/db
        endpoints: ["10.1.0.9:6379", "10.1.0.8:5432", "10.1.0.7:5432", "10.1.0.9:8080"]
      - service: default/cache
        endpoints: []
    podCgroups: [/sys/fs/cgroup/kubepods/pod-a, /sys/fs/cgroup/kubepods/pod-b]
  - name: feature-y
    routingKey: feature-y
    forks:
      - service: default/db
        endpoints: ["10.1.0.10:5432"]
"#;

    fn fork_pods_of(text: &str) -> BTreeMap<Arc<str>, ForkPods> {
        let file = RoutesFile::parse(text).expect("parses");
        RouteSnapshot::from_file(&file, &mut ServiceIds::default()).fork_pods
    }

    fn key(addr: &str) -> SockKey {
        SockKey::new(addr.parse::<SocketAddr>().expect("address"))
    }

    #[test]
    fn keyless_ports_go_to_the_lowest_fork_endpoint_of_their_port_for_every_address() {
        let all = fork_pods_of(FILE);
        let pods = &all["feature-x"];
        assert_eq!(pods.pods.len(), 2);
        let expected = BTreeMap::from([
            (key("10.96.0.5:5432"), key("10.1.0.7:5432")),
            (key("[fd00:96::5]:5432"), key("10.1.0.7:5432")),
            (key("10.96.0.5:6379"), key("10.1.0.9:6379")),
            (key("[fd00:96::5]:6379"), key("10.1.0.9:6379")),
            // Forked with no endpoint ready: refused, not baseline.
            (key("10.96.0.6:11211"), NO_FORK_ENDPOINT),
        ]);
        assert_eq!(pods.deps, expected, "HTTP ports carry keys: not here");
    }

    #[test]
    fn a_sandbox_without_fork_pods_on_the_node_has_no_fork_programs() {
        assert!(!fork_pods_of(FILE).contains_key("feature-y"));
    }

    #[test]
    fn fork_pods_inherit_their_sandboxs_id_unless_it_opts_out() {
        assert_ne!(fork_pods_of(FILE)["feature-x"].inherit_as, 0);
        let opted_out = FILE.replace("    podCgroups:", "    inheritKey: false\n    podCgroups:");
        assert_eq!(fork_pods_of(&opted_out)["feature-x"].inherit_as, 0);
    }

    #[test]
    fn a_forks_own_pods_reach_the_baseline_of_the_service_they_fork() {
        let text = FILE.replace(
            "      - service: default/cache\n        endpoints: []\n",
            "      - service: default/cache\n        endpoints: []\n        \
             podCgroups: [/sys/fs/cgroup/kubepods/pod-cache]\n",
        );
        let all = fork_pods_of(&text);
        let own = &all["feature-x#default/cache"];
        assert_eq!(own.sandbox.as_ref(), "feature-x");
        assert_eq!(own.fork_of.as_deref(), Some("default/cache"));
        assert_eq!(
            own.pods,
            BTreeSet::from([ForkPod::Cgroup("/sys/fs/cgroup/kubepods/pod-cache".into())])
        );
        assert!(
            !own.deps.contains_key(&key("10.96.0.6:11211")),
            "its own service: baseline, to seed itself"
        );
        assert_eq!(
            own.deps.get(&key("10.96.0.5:5432")),
            Some(&key("10.1.0.7:5432")),
            "the sandbox's other forks: as for every fork pod"
        );
        assert_eq!(
            all["feature-x"].deps.get(&key("10.96.0.6:11211")),
            Some(&NO_FORK_ENDPOINT),
            "the sandbox's other pods: still the fork (refused while it has no endpoint)"
        );
    }

    #[test]
    fn a_fork_pod_cgroup_must_be_an_absolute_path() {
        let text = FILE.replace("/sys/fs/cgroup/kubepods/pod-b", "kubepods/pod-b");
        let error = RoutesFile::parse(&text)
            .expect_err("relative cgroup")
            .to_string();
        assert!(
            error.contains("sandboxes[0].podCgroups[1]") && error.contains("absolute"),
            "{error}"
        );
    }
}
