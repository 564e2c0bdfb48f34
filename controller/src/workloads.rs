//! Fork workloads in the API, of either kind ([`Workload`]): the baseline
//! read, the fork applied (server-side apply: a fork edited by hand is put
//! back), a Sandbox's forks listed by its labels, and a fork deleted with
//! its volume claims.
//!
//! A StatefulSet fork's claims carry its pods' selector labels (the
//! StatefulSet controller copies them onto every claim it makes), so they
//! are found by the same labels as its pods and deleted right after the
//! fork, whether or not the cluster honours the fork's
//! `persistentVolumeClaimRetentionPolicy`. A claim still mounted by a
//! terminating pod goes when the pod does (the claim's protection
//! finalizer); nothing of the baseline's claims matches those labels.

use detour_api::{SANDBOX_LABEL, SANDBOX_NAMESPACE_LABEL, Sandbox, label_value};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};

use crate::fork::Workload;

/// The field manager of everything the controller applies.
pub const MANAGER: &str = "detour-controller";

/// A fork as applied.
pub struct Applied {
    /// `Kind/name`, as the Sandbox's status names it.
    pub workload: String,
    pub namespace: String,
    pub name: String,
    /// Whether this apply made it.
    pub created: bool,
}

/// The baseline `namespace/name` of kind `W`, if it exists.
pub async fn baseline<W: Workload>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<W>, kube::Error> {
    Api::<W>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
}

/// Makes the fork exist as `desired` says.
pub async fn apply<W: Workload>(client: &Client, desired: &W) -> Result<Applied, kube::Error> {
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api = Api::<W>::namespaced(client.clone(), &namespace);
    let created = api.get_opt(&name).await?.is_none();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(Applied {
        workload: format!("{}/{name}", W::KIND),
        namespace,
        name,
        created,
    })
}

/// The label selector of a Sandbox's forks, in every namespace.
pub fn of_sandbox(sandbox: &Sandbox) -> String {
    format!(
        "{SANDBOX_LABEL}={},{SANDBOX_NAMESPACE_LABEL}={}",
        label_value(&sandbox.name_any()),
        label_value(&sandbox.namespace().unwrap_or_default())
    )
}

/// The Sandbox's forks of kind `W`.
pub async fn list<W: Workload>(client: &Client, sandbox: &Sandbox) -> Result<Vec<W>, kube::Error> {
    Ok(Api::<W>::all(client.clone())
        .list(&ListParams::default().labels(&of_sandbox(sandbox)))
        .await?
        .items)
}

/// Deletes `fork`, then the volume claims its pods had; returns the
/// claims' names.
pub async fn delete<W: Workload>(client: &Client, fork: &W) -> Result<Vec<String>, kube::Error> {
    let namespace = fork.namespace().unwrap_or_default();
    Api::<W>::namespaced(client.clone(), &namespace)
        .delete(&fork.name_any(), &DeleteParams::background())
        .await?;
    let mut copy = fork.clone();
    let selector = copy
        .pods()
        .selector
        .match_labels
        .clone()
        .unwrap_or_default();
    // Without labels the selector would match every claim.
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
    let mut deleted = Vec::new();
    for claim in claims
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        claims
            .delete(&claim.name_any(), &DeleteParams::background())
            .await?;
        deleted.push(claim.name_any());
    }
    Ok(deleted)
}
