//! What the agent is granted: RBAC rules equal to what it watches, and a
//! DaemonSet that keeps its security contract and sets only real settings.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use detour::{cli::Cli, k8s::WATCHED};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};

use super::{helm::render_chart, objects::Object};
use crate::{agent_container, deploy_objects, env, env_value, find};

/// What the agent's container is granted (see deploy/README.md,
/// "Capabilities", and the capability tests in tests/tests/integration/agent/startup.rs).
const CAPABILITIES: [&str; 4] = ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"];

/// `DETOUR_*` variables the DaemonSet sets that are not `detour agent` flags:
/// the log filter is read by the telemetry module.
const ENV_NOT_FLAGS: [&str; 1] = [detour::defaults::ENV_LOG];

/// The ClusterRole grants `list` and `watch`, nothing else, on exactly the
/// watched resources, and is bound to the DaemonSet's service account.
pub fn check_rbac(objects: &[Object], namespace: &str) {
    let role: ClusterRole = find(objects, "ClusterRole", "detour").to();
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let wanted: BTreeSet<(String, String, String)> = WATCHED
        .iter()
        .flat_map(|w| {
            ["list", "watch"].map(|verb| (w.group.to_owned(), w.resource.to_owned(), verb.into()))
        })
        .collect();
    assert_eq!(granted, wanted, "ClusterRole rules vs detour::k8s::WATCHED");

    let binding: ClusterRoleBinding = find(objects, "ClusterRoleBinding", "detour").to();
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("ClusterRole", "detour")
    );
    let daemonset: DaemonSet = find(objects, "DaemonSet", "detour").to();
    let account = daemonset
        .spec
        .template
        .spec
        .and_then(|pod| pod.service_account_name)
        .expect("serviceAccountName");
    find(objects, "ServiceAccount", &account);
    let subjects = binding.subjects.unwrap_or_default();
    assert!(
        subjects.iter().any(|s| s.kind == "ServiceAccount"
            && s.name == account
            && s.namespace.as_deref() == Some(namespace)),
        "{subjects:?}"
    );
}

#[test]
fn rbac_grants_exactly_list_and_watch_on_the_watched_resources() {
    check_rbac(&deploy_objects(), "detour");
    check_rbac(&render_chart(""), "detour");
}

#[test]
fn daemonset_is_unprivileged_with_the_measured_capabilities() {
    let objects = deploy_objects();
    let daemonset: DaemonSet = find(&objects, "DaemonSet", "detour").to();
    let pod = daemonset.spec.template.spec.clone().expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "the agent must tolerate every taint: {tolerations:?}"
    );
    let strategy = daemonset
        .spec
        .update_strategy
        .clone()
        .expect("updateStrategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));

    let agent = agent_container(&daemonset);
    let security = agent.security_context.clone().expect("securityContext");
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let capabilities = security.capabilities.expect("capabilities");
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        capabilities.add,
        Some(CAPABILITIES.map(String::from).to_vec())
    );

    let resources = agent.resources.clone().expect("resources");
    for (what, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let list = list.clone().unwrap_or_default();
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "{what}: {list:?}"
        );
    }

    // The proxy and the metrics endpoint listen on the node IP; the probes
    // reach the latter through the named port.
    let vars = env(&agent);
    let host_ip = vars
        .get("HOST_IP")
        .and_then(|var| var.value_from.as_ref())
        .and_then(|from| from.field_ref.as_ref())
        .expect("HOST_IP from the downward API");
    assert_eq!(host_ip.field_path, "status.hostIP");
    let names: Vec<&str> = agent
        .env
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        names.first(),
        Some(&"HOST_IP"),
        "HOST_IP is defined before its uses"
    );
    assert_eq!(env_value(&agent, "DETOUR_PROXY_ADDR"), "$(HOST_IP):15001");
    assert_eq!(env_value(&agent, "DETOUR_METRICS_ADDR"), "$(HOST_IP):15020");
    assert_eq!(env_value(&agent, "DETOUR_KUBERNETES"), "true");
    // No declared ports: with hostNetwork they are host ports, and the
    // update's surge pod could not schedule beside the running one.
    assert_eq!(agent.ports, None, "no ports declared");
    for (probe, path) in [
        (&agent.readiness_probe, "/readyz"),
        (&agent.liveness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            serde_json::to_value(&get.port).expect("port"),
            serde_json::json!(15020)
        );
    }
    // Hitless updates: a new agent beside the old one, never none.
    let update = daemonset
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .expect("rolling update");
    assert_eq!(
        serde_json::to_value((&update.max_surge, &update.max_unavailable)).expect("strategy"),
        serde_json::json!([1, 0])
    );

    // The agent finds the kubepods cgroup itself, under the mounted host
    // cgroup hierarchy: no path is set.
    assert!(
        agent
            .env
            .iter()
            .flatten()
            .all(|var| var.name != "DETOUR_CGROUP"),
        "DETOUR_CGROUP is left to detection"
    );
    let mounts: BTreeMap<String, String> = agent
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.name.clone()))
        .collect();
    let host_path = |volume: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
            .unwrap_or_else(|| panic!("volume {volume} is not a hostPath"))
    };
    assert_eq!(host_path(&mounts["/sys/fs/cgroup"]), "/sys/fs/cgroup");
    assert_eq!(host_path(&mounts["/sys/fs/bpf"]), "/sys/fs/bpf");
}

#[test]
fn daemonset_sets_only_real_agent_settings() {
    let objects = deploy_objects();
    let agent = agent_container(&find(&objects, "DaemonSet", "detour").to());
    let command = Cli::command();
    let flags = command
        .find_subcommand("agent")
        .expect("detour agent")
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect::<BTreeSet<_>>();
    for var in agent.env.iter().flatten() {
        if var.name.starts_with("DETOUR_") && !ENV_NOT_FLAGS.contains(&var.name.as_str()) {
            assert!(
                flags.contains(&var.name),
                "{} is not a `detour agent` setting",
                var.name
            );
        }
    }
    assert_eq!(agent.args, Some(vec!["agent".to_owned()]));
}
