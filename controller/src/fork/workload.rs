//! The baseline workload kinds a fork can copy, and what each kind needs
//! of a copy beyond the pod template every kind shares.
//!
//! - **Deployment**: nothing more; its pods are interchangeable.
//! - **StatefulSet**: the fork's volume claims come from the baseline's
//!   templates and are named after the fork (`<claim>-<fork>-<ordinal>`),
//!   so nothing of the baseline's volumes is touched; they are deleted when
//!   the fork is deleted or scaled down (`persistentVolumeClaimRetentionPolicy`,
//!   and the controller deletes them itself too: see `reconcile`).

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use serde::{Serialize, de::DeserializeOwned};

/// The parts of a workload a fork changes.
pub struct PodsOf<'a> {
    pub selector: &'a mut LabelSelector,
    pub template: &'a mut PodTemplateSpec,
    pub replicas: &'a mut Option<i32>,
}

/// A workload kind the controller can fork.
pub trait Workload:
    kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
{
    /// Its kind, as `Kind/name` in the Sandbox's status says it.
    const KIND: &'static str;

    fn pods(&mut self) -> PodsOf<'_>;

    /// Makes a copy of the baseline a fork of its kind: drops the status,
    /// and sets what the kind needs.
    fn as_fork(&mut self);
}

impl Workload for Deployment {
    const KIND: &'static str = "Deployment";

    fn pods(&mut self) -> PodsOf<'_> {
        PodsOf {
            selector: &mut self.spec.selector,
            template: &mut self.spec.template,
            replicas: &mut self.spec.replicas,
        }
    }

    fn as_fork(&mut self) {
        self.status = None;
    }
}

impl Workload for StatefulSet {
    const KIND: &'static str = "StatefulSet";

    fn pods(&mut self) -> PodsOf<'_> {
        PodsOf {
            selector: &mut self.spec.selector,
            template: &mut self.spec.template,
            replicas: &mut self.spec.replicas,
        }
    }

    fn as_fork(&mut self) {
        self.status = None;
        self.spec.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Delete".to_owned()),
                when_scaled: Some("Delete".to_owned()),
            });
    }
}
