//! The Kubernetes manifests in `deploy/` and `examples/`:
//! - every YAML parses into its typed object, with no field lost;
//! - the kustomization lists every manifest and `kubectl kustomize` renders
//!   them unchanged;
//! - the RBAC rules grant exactly `list` and `watch` on exactly [`WATCHED`];
//! - the DaemonSet keeps its security contract and uses real agent settings;
//! - the Helm chart renders (see `manifests/render.rs`: no `helm` binary is
//!   needed) to the same objects with its default values, and puts each
//!   value where it belongs.

mod manifests {
    pub mod grants;
    pub mod helm;
    pub mod objects;
    pub mod render;
}

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use detour::{k8s::crd, routes::RoutesFile};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{Container, EnvVar},
};
use manifests::objects::{self, Object};
use yaml_serde::Value;

fn repo() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.canonicalize().unwrap_or(repo)
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn chart() -> PathBuf {
    deploy().join("helm/detour")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

/// The manifests `kubectl apply -k deploy/` applies, by path relative to
/// `deploy/`: the CRDs and the top-level YAML files but the kustomization.
fn deploy_manifests() -> Vec<String> {
    let mut paths = Vec::new();
    for dir in ["", "crds"] {
        for path in yaml_files(&deploy().join(dir)) {
            let relative = path
                .strip_prefix(deploy())
                .expect("under deploy/")
                .display()
                .to_string();
            if relative != "kustomization.yaml" {
                paths.push(relative);
            }
        }
    }
    paths.sort();
    paths
}

fn deploy_objects() -> Vec<Object> {
    deploy_manifests()
        .iter()
        .flat_map(|relative| objects::read_file(&deploy().join(relative)))
        .collect()
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects
        .iter()
        .find(|object| object.kind == kind && object.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", keys(objects)))
}

fn keys(objects: &[Object]) -> BTreeSet<(String, String)> {
    objects
        .iter()
        .map(|object| (object.kind.clone(), object.name.clone()))
        .collect()
}

fn agent_container(daemonset: &DaemonSet) -> Container {
    let pod = daemonset.spec.template.spec.as_ref().expect("pod spec");
    pod.containers
        .iter()
        .find(|container| container.name == "agent")
        .cloned()
        .expect("a container named agent")
}

fn env(container: &Container) -> BTreeMap<String, EnvVar> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.clone()))
        .collect()
}

fn env_value(container: &Container, name: &str) -> String {
    env(container)
        .get(name)
        .and_then(|var| var.value.clone())
        .unwrap_or_else(|| panic!("no value for env {name}"))
}

#[test]
fn every_manifest_in_deploy_parses_into_its_type() {
    let objects = deploy_objects();
    let expected: BTreeSet<(String, String)> = [
        ("CustomResourceDefinition", "sandboxes.detour.dev"),
        ("CustomResourceDefinition", "routegroups.detour.dev"),
        ("Namespace", "detour"),
        ("ServiceAccount", "detour"),
        ("ClusterRole", "detour"),
        ("ClusterRoleBinding", "detour"),
        ("DaemonSet", "detour"),
        ("ServiceAccount", "detour-controller"),
        ("ClusterRole", "detour-controller"),
        ("ClusterRoleBinding", "detour-controller"),
        ("Role", "detour-controller-lease"),
        ("RoleBinding", "detour-controller-lease"),
        ("ValidatingAdmissionPolicy", "detour-controller-forks-only"),
        (
            "ValidatingAdmissionPolicyBinding",
            "detour-controller-forks-only",
        ),
        ("Deployment", "detour-controller"),
    ]
    .into_iter()
    .map(|(kind, name)| (kind.to_owned(), name.to_owned()))
    .collect();
    assert_eq!(keys(&objects), expected);
}

#[test]
fn every_example_parses_into_its_type() {
    let mut kinds = BTreeSet::new();
    for path in yaml_files(&repo().join("examples")) {
        let text = read(&path);
        let documents = objects::documents(&path.display().to_string(), &text);
        if documents.iter().all(|doc| doc.get("apiVersion").is_none()) {
            // A routes file for standalone mode, not a Kubernetes object.
            RoutesFile::parse(&text)
                .unwrap_or_else(|e| panic!("{}: not a routes file: {e}", path.display()));
            kinds.insert("routes file".to_owned());
            continue;
        }
        for object in objects::read_file(&path) {
            kinds.insert(object.kind);
        }
    }
    for kind in ["Sandbox", "RouteGroup", "Deployment", "routes file"] {
        assert!(kinds.contains(kind), "no {kind} in examples/: {kinds:?}");
    }
}

#[test]
fn the_examples_fit_together() {
    let examples = repo().join("examples");
    let sandbox: crd::Sandbox =
        objects::read_file(&examples.join("sandbox-own-pods.yaml"))[0].to::<crd::Sandbox>();
    let group: crd::RouteGroup =
        objects::read_file(&examples.join("routegroup.yaml"))[0].to::<crd::RouteGroup>();
    let fork: Deployment =
        objects::read_file(&examples.join("fork-deployment.yaml"))[0].to::<Deployment>();

    let pod_labels = fork
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .expect("fork pod labels");
    assert!(
        pod_labels.contains_key(crd::FORK_LABEL),
        "the fork's pods need the {} label",
        crd::FORK_LABEL
    );
    let selector = sandbox.spec.forks[0]
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .expect("matchLabels");
    for (key, value) in &selector {
        assert_eq!(pod_labels.get(key), Some(value), "fork pods miss {key}");
    }
    assert_eq!(
        fork.metadata.namespace, sandbox.metadata.namespace,
        "a Sandbox selects fork pods in its own namespace"
    );
    // The controller-made sandbox: a forkOf fork, a member of the group.
    let forked: crd::Sandbox =
        objects::read_file(&examples.join("sandbox.yaml"))[0].to::<crd::Sandbox>();
    assert!(
        forked.spec.forks[0].fork_of.is_some(),
        "examples/sandbox.yaml uses forkOf"
    );
    let forked_name = forked.metadata.name.clone().expect("sandbox name");
    assert!(group.spec.sandboxes.contains(&forked_name));
}

#[test]
fn kustomization_lists_every_manifest_and_renders_them_unchanged() {
    let kustomization: Value =
        yaml_serde::from_str(&read(&deploy().join("kustomization.yaml"))).expect("kustomization");
    let mut listed: Vec<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a path").to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        deploy_manifests(),
        "deploy/kustomization.yaml resources"
    );

    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy())
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}): run `cargo xtask setup`"));
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = objects::parse_all(
        "kubectl kustomize",
        &String::from_utf8_lossy(&output.stdout),
    );
    let files = deploy_objects();
    assert_eq!(keys(&rendered), keys(&files));
    for object in &files {
        let rendered = find(&rendered, &object.kind, &object.name);
        assert_eq!(
            objects::difference(&rendered.json, &object.json),
            None,
            "kustomize changed {} {}",
            object.kind,
            object.name
        );
    }
}
