//! The Helm chart, rendered by `render.rs`: the same objects as `deploy/`
//! with its default values, each value where it belongs, the generated CRDs,
//! and the workspace version.

use k8s_openapi::api::apps::v1::DaemonSet;
use yaml_serde::Value;

use super::{
    grants::check_rbac,
    objects::{self, Object},
    render,
};
use crate::{
    agent_container, chart, deploy, deploy_objects, env_value, find, keys, read, yaml_files,
};

/// The chart's objects rendered with `values.yaml` plus `overrides`, in the
/// release namespace `detour` (templates in `templates/`, CRDs in `crds/`).
pub fn render_chart(overrides: &str) -> Vec<Object> {
    render_chart_in("detour", overrides)
}

fn render_chart_in(namespace: &str, overrides: &str) -> Vec<Object> {
    let mut values: Value =
        yaml_serde::from_str(&read(&chart().join("values.yaml"))).expect("values");
    if !overrides.is_empty() {
        let overrides: Value = yaml_serde::from_str(overrides).expect("overrides");
        render::merge(&mut values, &overrides);
    }
    let chart_yaml: Value =
        yaml_serde::from_str(&read(&chart().join("Chart.yaml"))).expect("Chart.yaml");
    let root = render::context(values, "detour", namespace, &chart_yaml);
    let mut objects = Vec::new();
    for path in yaml_files(&chart().join("templates")) {
        let name = path.display().to_string();
        let text = render::render(&name, &read(&path), &root);
        assert!(!text.contains("{{"), "{name} left template syntax:\n{text}");
        objects.extend(objects::parse_all(&name, &text));
    }
    let notes = chart().join("templates/NOTES.txt");
    let notes = render::render("NOTES.txt", &read(&notes), &root);
    assert!(
        !notes.contains("{{") && notes.contains(namespace),
        "{notes}"
    );
    for path in yaml_files(&chart().join("crds")) {
        objects.extend(objects::read_file(&path));
    }
    objects
}

#[test]
fn helm_chart_renders_the_kustomize_objects_with_its_defaults() {
    let files = deploy_objects();
    let chart = render_chart("");
    let mut expected = keys(&files);
    expected.remove(&("Namespace".to_owned(), "detour".to_owned()));
    assert_eq!(keys(&chart), expected, "createNamespace is off by default");
    for object in &chart {
        let file = find(&files, &object.kind, &object.name);
        assert_eq!(
            objects::difference(&object.json, &file.json),
            None,
            "{} {} differs between the chart and {}",
            object.kind,
            object.name,
            file.origin
        );
    }
}

#[test]
fn helm_chart_crds_are_the_generated_ones() {
    for (name, yaml) in detour::cli::crdgen::documents().expect("generate CRDs") {
        for dir in [deploy().join("crds"), chart().join("crds")] {
            assert!(
                read(&dir.join(name)) == yaml,
                "{}/{name} differs from the types: run `cargo xtask crdgen` and \
                 `cp deploy/crds/*.yaml deploy/helm/detour/crds/`",
                dir.display()
            );
        }
    }
    assert_eq!(
        yaml_files(&chart().join("crds")).len(),
        yaml_files(&deploy().join("crds")).len()
    );
}

#[test]
fn helm_chart_and_image_follow_the_workspace_version() {
    let version = env!("CARGO_PKG_VERSION");
    let chart_yaml: Value =
        yaml_serde::from_str(&read(&chart().join("Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart_yaml["version"].as_str(), Some(version));
    assert_eq!(chart_yaml["appVersion"].as_str(), Some(version));
    let values: Value = yaml_serde::from_str(&read(&chart().join("values.yaml"))).expect("values");
    assert_eq!(values["image"]["tag"].as_str(), Some(version));
    let agent = agent_container(&find(&deploy_objects(), "DaemonSet", "detour").to());
    assert_eq!(agent.image, Some(format!("detour:{version}")));
}

#[test]
fn helm_values_are_substituted_where_they_belong() {
    let chart = render_chart_in(
        "sandboxes-system",
        r#"
image: {repository: registry.example/detour, tag: "9.9.9", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
cgroupPath: /sys/fs/cgroup/kubepods
proxyPort: 16001
metricsPort: 16020
routingKeyNames: [team-key, sd-routing-key]
routingHeaders: [x-sandbox, x-env]
logFormat: text
logLevel: debug
extraArgs: ["--idle-timeout=120s"]
resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
tolerations: []
nodeSelector: {pool: apps}
priorityClassName: ""
createNamespace: true
"#,
    );
    let namespace = find(&chart, "Namespace", "sandboxes-system");
    assert_eq!(
        namespace
            .json
            .pointer("/metadata/labels/pod-security.kubernetes.io~1enforce"),
        Some(&serde_json::json!("privileged"))
    );
    check_rbac(&chart, "sandboxes-system");
    let daemonset: DaemonSet = find(&chart, "DaemonSet", "detour").to();
    assert_eq!(
        daemonset.metadata.namespace.as_deref(),
        Some("sandboxes-system")
    );
    let template = daemonset.spec.template.clone();
    let pod = template.spec.clone().expect("pod spec");
    assert_eq!(pod.priority_class_name, None);
    assert_eq!(pod.tolerations, Some(Vec::new()));
    // Maps merge with the defaults, as `helm install -f` does.
    assert_eq!(
        pod.node_selector,
        Some(
            [("kubernetes.io/os", "linux"), ("pool", "apps")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into()
        )
    );
    assert_eq!(
        pod.image_pull_secrets.expect("pull secrets")[0].name,
        "regcred"
    );
    assert_eq!(
        template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations")["prometheus.io/port"],
        "16020"
    );

    let agent = agent_container(&daemonset);
    assert_eq!(
        agent.image.as_deref(),
        Some("registry.example/detour:9.9.9")
    );
    assert_eq!(agent.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        agent.args,
        Some(vec!["agent".to_owned(), "--idle-timeout=120s".to_owned()])
    );
    for (name, want) in [
        ("DETOUR_CGROUP", "/sys/fs/cgroup/kubepods"),
        ("DETOUR_PROXY_ADDR", "$(HOST_IP):16001"),
        ("DETOUR_METRICS_ADDR", "$(HOST_IP):16020"),
        ("DETOUR_ROUTING_KEY_NAME", "team-key,sd-routing-key"),
        ("DETOUR_ROUTING_HEADER", "x-sandbox,x-env"),
        ("DETOUR_LOG_FORMAT", "text"),
        ("DETOUR_LOG", "debug"),
    ] {
        assert_eq!(env_value(&agent, name), want, "{name}");
    }
    let probe_port = agent
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|get| serde_json::to_value(&get.port).expect("port"));
    assert_eq!(probe_port, Some(serde_json::json!(16020)));
    let resources = agent.resources.expect("resources");
    assert_eq!(resources.requests.expect("requests")["cpu"].0, "50m");
    assert_eq!(resources.limits.expect("limits")["memory"].0, "128Mi");
}
