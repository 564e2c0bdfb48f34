//! What every step of the controller says of a Sandbox: its name in logs
//! and events, and the error a reconcile step fails with. Both the
//! reconciler ([`crate::reconcile`]) and the status report
//! ([`crate::status`]) use them, so they live below both.

use detour_api::Sandbox;
use kube::ResourceExt;

/// Why a reconcile step failed; the reconciler logs it and retries.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// `namespace/name`, as logs and events name a Sandbox.
pub fn label(sandbox: &Sandbox) -> String {
    format!(
        "{}/{}",
        sandbox.namespace().unwrap_or_default(),
        sandbox.name_any()
    )
}
