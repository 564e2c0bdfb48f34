//! The fork workload for one `forkOf` fork: a pure function of the baseline
//! Deployment or StatefulSet ([`Workload`]), the Services in its namespace,
//! the Sandbox and its customizations, so that every rule is tested without
//! a cluster.
//!
//! - The copy keeps the baseline's pod template (ConfigMaps, Secrets and
//!   ServiceAccount stay what they are: the fork lives in the baseline's
//!   namespace).
//! - **Fork pods are never selected by the baseline.** Every label key that
//!   the baseline workload's selector or a Service selecting the
//!   baseline's pods uses gets a rewritten value on the fork's pods, so
//!   neither the baseline's ReplicaSet or StatefulSet nor any such Service picks them up. The
//!   original values are kept in an annotation. The fork's own selector is
//!   the Sandbox and workload labels (`fork_selector_labels`), which is
//!   also how the agent finds its pods.
//! - Customizations apply in order: images, env, replicas (default 1),
//!   patch. One that does not apply is an error naming it; nothing is
//!   half-applied.

use std::collections::{BTreeMap, BTreeSet};

use detour_api::{
    Customizations, EnvOverride, FORK_LABEL, ImageOverride, PatchType, fork_selector_labels,
    label_value,
};
use k8s_openapi::{
    api::core::v1::{EnvVar, Service},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
pub use workload::Workload;

/// Annotation on fork pods: the original values of the rewritten labels.
pub const ORIGINAL_LABELS_ANNOTATION: &str = "detour.dev/original-labels";
/// What a rewritten label value ends with.
const FORK_SUFFIX: &str = "-detour-fork";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForkError {
    #[error("customizations.images: the baseline has no container {container:?} (it has {known})")]
    UnknownContainer { container: String, known: String },
    #[error("customizations.env[{index}]: the baseline has no container {container:?}")]
    UnknownEnvContainer { index: usize, container: String },
    #[error("customizations.patch does not apply: {0}")]
    Patch(String),
    #[error("the baseline has no pod template labels")]
    NoLabels,
}

/// Who the fork is for.
pub struct ForkOf<'a> {
    pub sandbox_namespace: &'a str,
    pub sandbox_name: &'a str,
    /// Set when the fork lives in the Sandbox's namespace.
    pub owner: Option<OwnerReference>,
    pub customizations: Option<&'a Customizations>,
}

/// The fork's name: `<baseline>-<sandbox>`, within the 63
/// characters a label value (and a pod name prefix) allows.
pub fn fork_name(baseline: &str, sandbox: &str) -> String {
    label_value(&format!("{baseline}-{sandbox}"))
}

/// Builds the fork of `baseline` (a Deployment or a StatefulSet) for `of`,
/// given the Services of the baseline's namespace.
pub fn build<W: Workload>(baseline: &W, services: &[Service], of: &ForkOf) -> Result<W, ForkError> {
    let name = baseline.meta().name.clone().unwrap_or_default();
    let mut fork = baseline.clone();
    fork.as_fork();
    let pods = fork.pods();
    let meta = pods
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    let labels = meta.labels.clone().unwrap_or_default();
    if labels.is_empty() {
        return Err(ForkError::NoLabels);
    }

    let keys = selecting_keys(pods.selector, &labels, services);
    let mut fork_labels = labels.clone();
    let mut original = BTreeMap::new();
    for key in &keys {
        if let Some(value) = labels.get(key) {
            original.insert(key.clone(), value.clone());
            fork_labels.insert(key.clone(), label_value(&format!("{value}{FORK_SUFFIX}")));
        }
    }
    let selector_labels = fork_selector_labels(of.sandbox_namespace, of.sandbox_name, &name);
    fork_labels.extend(selector_labels.clone());
    fork_labels.insert(FORK_LABEL.to_owned(), "true".to_owned());
    meta.labels = Some(fork_labels);
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(
        ORIGINAL_LABELS_ANNOTATION.to_owned(),
        serde_json::to_string(&original).unwrap_or_default(),
    );
    *pods.selector = LabelSelector {
        match_labels: Some(selector_labels.clone()),
        ..LabelSelector::default()
    };
    *pods.replicas = Some(1);

    let mut workload_labels = selector_labels;
    workload_labels.insert(FORK_LABEL.to_owned(), "true".to_owned());
    *fork.meta_mut() = ObjectMeta {
        name: Some(fork_name(&name, of.sandbox_name)),
        namespace: baseline.meta().namespace.clone(),
        labels: Some(workload_labels),
        owner_references: of.owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    if let Some(customizations) = of.customizations {
        let expected = fork.clone();
        customize(&mut fork, customizations)?;
        keeps_apart(&expected, &fork, &original)?;
    }
    Ok(fork)
}

/// A patch may change anything but what keeps the fork apart from the
/// baseline: its selector, and the labels its pods carry instead of the
/// baseline's.
fn keeps_apart<W: Workload>(
    expected: &W,
    fork: &W,
    original: &BTreeMap<String, String>,
) -> Result<(), ForkError> {
    let parts = |w: &W| {
        let mut w = w.clone();
        let pods = w.pods();
        let labels = pods
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        (pods.selector.clone(), labels)
    };
    let ((expected_selector, wanted), (selector, got)) = (parts(expected), parts(fork));
    let kept = original
        .keys()
        .chain(
            expected_selector
                .match_labels
                .iter()
                .flatten()
                .map(|(k, _)| k),
        )
        .all(|key| wanted.get(key) == got.get(key));
    if expected_selector != selector || !kept {
        return Err(ForkError::Patch(
            "it changes the fork's selector or the pod labels that keep the fork apart from \
             the baseline"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The label keys that select the baseline's pods: its own selector's, and
/// those of every Service whose selector matches the pod labels.
fn selecting_keys(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
    services: &[Service],
) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .chain(
            selector
                .match_expressions
                .iter()
                .flatten()
                .map(|e| e.key.clone()),
        )
        .collect();
    for service in services {
        let Some(wanted) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            keys.extend(wanted.keys().cloned());
        }
    }
    keys
}

fn customize<W: Workload>(fork: &mut W, customizations: &Customizations) -> Result<(), ForkError> {
    let pods = fork.pods();
    let containers = &mut pods
        .template
        .spec
        .get_or_insert_with(Default::default)
        .containers;
    for ImageOverride { container, image } in &customizations.images {
        let Some(target) = containers.iter_mut().find(|c| &c.name == container) else {
            return Err(ForkError::UnknownContainer {
                container: container.clone(),
                known: containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        target.image = Some(image.clone());
    }
    for (index, env) in customizations.env.iter().enumerate() {
        let EnvOverride {
            container,
            name,
            value,
            value_from,
        } = env;
        if let Some(wanted) = container
            && !containers.iter().any(|c| &c.name == wanted)
        {
            return Err(ForkError::UnknownEnvContainer {
                index,
                container: wanted.clone(),
            });
        }
        for target in containers
            .iter_mut()
            .filter(|c| container.as_ref().is_none_or(|wanted| &c.name == wanted))
        {
            let vars = target.env.get_or_insert_with(Vec::new);
            vars.retain(|v| &v.name != name);
            vars.push(EnvVar {
                name: name.clone(),
                value: value.clone(),
                value_from: value_from.clone(),
            });
        }
    }
    *pods.replicas = Some(customizations.replicas.unwrap_or(1));
    if let Some(patch) = &customizations.patch {
        let mut value =
            serde_json::to_value(&*fork).map_err(|e| ForkError::Patch(e.to_string()))?;
        match patch.type_ {
            PatchType::Json => {
                let operations: json_patch::Patch = serde_json::from_value(patch.patch.clone())
                    .map_err(|e| ForkError::Patch(format!("not a JSON patch: {e}")))?;
                json_patch::patch(&mut value, &operations)
                    .map_err(|e| ForkError::Patch(e.to_string()))?;
            }
            PatchType::Merge => json_patch::merge(&mut value, &patch.patch),
        }
        *fork = serde_json::from_value(value)
            .map_err(|e| ForkError::Patch(format!("the result is not a {}: {e}", W::KIND)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
mod workload;
