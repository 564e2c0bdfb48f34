//! The fork rules on objects as `kubectl` would show them.

use detour_api::{Customizations, EnvOverride, ImageOverride, PatchType, WorkloadPatch};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Service,
};
use serde_json::json;

use super::{ForkError, ForkOf, ORIGINAL_LABELS_ANNOTATION, build, fork_name};

fn baseline() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "reviews"}},
            "template": {
                "metadata": {"labels": {"app": "reviews", "version": "v1", "team": "a"}},
                "spec": {
                    "serviceAccountName": "reviews",
                    "containers": [
                        {"name": "reviews", "image": "reviews:1", "env": [{"name": "MODE", "value": "prod"}]},
                        {"name": "sidecar", "image": "log:1"},
                    ],
                },
            },
        },
    }))
    .expect("deployment")
}

fn service(selector: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"selector": selector}}))
        .expect("service")
}

fn of(customizations: Option<&Customizations>) -> ForkOf<'_> {
    ForkOf {
        sandbox_namespace: "dev",
        sandbox_name: "pr-7",
        owner: None,
        customizations,
    }
}

fn pod_labels(fork: &Deployment) -> serde_json::Value {
    json!(
        fork.spec
            .template
            .metadata
            .as_ref()
            .expect("present")
            .labels
    )
}

#[test]
fn fork_pods_carry_rewritten_values_for_every_selecting_key_and_the_sandbox_labels() {
    let services = [
        service(json!({"app": "reviews", "version": "v1"})),
        service(json!({"app": "other"})),
    ];
    let fork = build(&baseline(), &services, &of(None)).expect("fork");
    assert_eq!(fork.metadata.name.as_deref(), Some("reviews-pr-7"));
    assert_eq!(fork.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(
        pod_labels(&fork),
        json!({
            // The Deployment's selector key and the matching Service's keys.
            "app": "reviews-detour-fork",
            "version": "v1-detour-fork",
            // Selected by nothing: kept.
            "team": "a",
            "detour.dev/fork": "true",
            "detour.dev/sandbox": "pr-7",
            "detour.dev/sandbox-namespace": "dev",
            "detour.dev/fork-of": "reviews",
        })
    );
    let template = fork.spec.template.metadata.as_ref().expect("present");
    assert_eq!(
        template.annotations.as_ref().expect("present")[ORIGINAL_LABELS_ANNOTATION],
        r#"{"app":"reviews","version":"v1"}"#
    );
    let spec = &fork.spec;
    assert_eq!(
        json!(spec.selector.match_labels),
        json!({"detour.dev/sandbox": "pr-7", "detour.dev/sandbox-namespace": "dev", "detour.dev/fork-of": "reviews"})
    );
    assert_eq!(
        spec.replicas,
        Some(1),
        "one replica by default, whatever the baseline runs"
    );
    assert_eq!(
        spec.template
            .spec
            .as_ref()
            .expect("present")
            .service_account_name
            .as_deref(),
        Some("reviews"),
        "the baseline's ServiceAccount, ConfigMaps and Secrets stay"
    );
}

#[test]
fn customizations_apply_in_order_and_a_bad_one_is_named() {
    let customizations = Customizations {
        images: vec![ImageOverride {
            container: "reviews".into(),
            image: "reviews:pr-7".into(),
        }],
        env: vec![
            EnvOverride {
                container: Some("reviews".into()),
                name: "MODE".into(),
                value: Some("test".into()),
                value_from: None,
            },
            EnvOverride {
                container: None,
                name: "PR".into(),
                value: Some("7".into()),
                value_from: None,
            },
        ],
        replicas: Some(2),
        patch: Some(WorkloadPatch {
            type_: PatchType::Merge,
            patch: json!({"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 5}}}}),
        }),
    };
    let fork = build(&baseline(), &[], &of(Some(&customizations))).expect("fork");
    let spec = &fork.spec;
    let pod = spec.template.spec.as_ref().expect("present");
    assert_eq!(pod.containers[0].image.as_deref(), Some("reviews:pr-7"));
    assert_eq!(pod.containers[1].image.as_deref(), Some("log:1"));
    assert_eq!(
        json!(pod.containers[0].env),
        json!([{"name": "MODE", "value": "test"}, {"name": "PR", "value": "7"}])
    );
    assert_eq!(
        json!(pod.containers[1].env),
        json!([{"name": "PR", "value": "7"}])
    );
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(pod.termination_grace_period_seconds, Some(5));

    let unknown = Customizations {
        images: vec![ImageOverride {
            container: "web".into(),
            image: "x".into(),
        }],
        ..Customizations::default()
    };
    assert_eq!(
        build(&baseline(), &[], &of(Some(&unknown))).expect_err("refused"),
        ForkError::UnknownContainer {
            container: "web".into(),
            known: "reviews, sidecar".into()
        }
    );
    let failing = Customizations {
        patch: Some(WorkloadPatch {
            type_: PatchType::Json,
            patch: json!([{"op": "remove", "path": "/spec/nothing"}]),
        }),
        ..Customizations::default()
    };
    assert!(matches!(
        build(&baseline(), &[], &of(Some(&failing))),
        Err(ForkError::Patch(_))
    ));
}

#[test]
fn a_patch_cannot_put_the_fork_back_under_the_baselines_selector() {
    let sneaky = Customizations {
        patch: Some(WorkloadPatch {
            type_: PatchType::Merge,
            patch: json!({"spec": {"template": {"metadata": {"labels": {"app": "reviews"}}}}}),
        }),
        ..Customizations::default()
    };
    let error = build(&baseline(), &[], &of(Some(&sneaky))).expect_err("refused");
    assert!(error.to_string().contains("keep the fork apart"), "{error}");
}

#[test]
fn long_names_fit_a_label_value() {
    let name = fork_name(&"b".repeat(40), &"s".repeat(40));
    assert!(name.len() <= 63, "{name}");
    assert_ne!(name, fork_name(&"b".repeat(40), &"t".repeat(40)));
}

fn stateful_baseline() -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "postgres", "image": "postgres:17"}]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        },
        "status": {"replicas": 3, "readyReplicas": 3},
    }))
    .expect("statefulset")
}

#[test]
fn a_stateful_fork_has_claims_of_its_own_that_go_with_it() {
    let fork = build(&stateful_baseline(), &[], &of(None)).expect("fork");
    // Claims are named `<template>-<statefulset>-<ordinal>`: the fork's name
    // makes them its own, and they carry the fork's selector labels.
    assert_eq!(fork.metadata.name.as_deref(), Some("db-pr-7"));
    let claims = fork
        .spec
        .volume_claim_templates
        .as_ref()
        .expect("templates");
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let policy = fork
        .spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("policy");
    assert_eq!(
        (
            policy.when_deleted.as_deref(),
            policy.when_scaled.as_deref()
        ),
        (Some("Delete"), Some("Delete")),
        "the baseline's Retain is not the fork's"
    );
    assert_eq!(fork.spec.replicas, Some(1));
    assert_eq!(
        json!(fork.spec.selector.match_labels),
        json!({"detour.dev/fork-of": "db", "detour.dev/sandbox": "pr-7",
               "detour.dev/sandbox-namespace": "dev"})
    );
    assert_eq!(
        fork.spec
            .template
            .metadata
            .as_ref()
            .expect("meta")
            .labels
            .as_ref()
            .expect("labels")["app"],
        "db-detour-fork",
        "the baseline StatefulSet never adopts the fork's pods"
    );
    assert!(fork.status.is_none());
}

#[test]
fn a_stateful_fork_is_seeded_by_an_init_container_from_a_patch() {
    let seed = Customizations {
        patch: Some(WorkloadPatch {
            type_: PatchType::Json,
            patch: json!([{"op": "add", "path": "/spec/template/spec/initContainers", "value": [
                {"name": "seed", "image": "postgres:17", "command": ["sh", "-c", "pg_dump"]}
            ]}]),
        }),
        ..Customizations::default()
    };
    let fork = build(&stateful_baseline(), &[], &of(Some(&seed))).expect("fork");
    let init = fork
        .spec
        .template
        .spec
        .as_ref()
        .expect("spec")
        .init_containers
        .as_ref();
    assert_eq!(init.map(|c| c[0].name.as_str()), Some("seed"));
}
