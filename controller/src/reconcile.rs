//! One Sandbox's reconcile: make its `forkOf` forks exist as [`fork::build`]
//! says (server-side apply: a fork edited by hand is put back), delete the
//! forks it no longer names, delete it once its TTL has run out, and report
//! its status. A finalizer deletes its forks before the Sandbox goes, in
//! whatever namespace they live; forks in the Sandbox's own namespace also
//! carry an owner reference, so the garbage collector removes them even if
//! the controller is gone.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use detour_api::{Sandbox, WorkloadKind};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Service,
    },
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder},
        finalizer::{Event, finalizer},
    },
};
use tracing::{info, warn};

use crate::{
    fork::{self, ForkOf, Workload},
    metrics::Metrics,
    sandbox::{ReconcileError, label},
    status, workloads,
};

/// The finalizer that deletes a Sandbox's forks before it goes.
pub const FINALIZER: &str = "detour.dev/forks";

pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    /// Kubernetes Events on the Sandbox, for each step and each failure.
    pub recorder: Recorder,
}

impl Context {
    /// Publishes an Event on `sandbox` (best effort: a lost Event is logged).
    pub async fn event(&self, sandbox: &Sandbox, warning: bool, reason: &str, note: String) {
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &sandbox.object_ref(&()))
            .await
        {
            warn!(sandbox = %label(sandbox), %error, "event not recorded");
        }
    }
}

/// Reconciles one Sandbox (the `Controller`'s reconciler).
pub async fn reconcile(sandbox: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = sandbox.namespace().unwrap_or_default();
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, sandbox, |event| async {
        match event {
            Event::Apply(sandbox) => apply(&sandbox, &ctx).await,
            Event::Cleanup(sandbox) => cleanup(&sandbox, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(e.to_string()))
}

/// Retries a failed reconcile after a short pause.
pub fn error_policy(sandbox: Arc<Sandbox>, error: &ReconcileError, _: Arc<Context>) -> Action {
    warn!(sandbox = %label(&sandbox), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn apply(sandbox: &Sandbox, ctx: &Context) -> Result<Action, ReconcileError> {
    let namespace = sandbox.namespace().unwrap_or_default();
    let name = sandbox.name_any();
    let expires_at = expiry(sandbox);
    if let Some(at) = expires_at
        && at <= Timestamp::now()
    {
        info!(sandbox = %label(sandbox), "TTL ran out; deleting the Sandbox");
        ctx.event(
            sandbox,
            false,
            "Expired",
            "the TTL ran out; deleting the Sandbox and its forks".to_owned(),
        )
        .await;
        Api::<Sandbox>::namespaced(ctx.client.clone(), &namespace)
            .delete(&name, &DeleteParams::default())
            .await?;
        return Ok(Action::await_change());
    }

    let mut report = status::Report::new(sandbox, expires_at);
    let mut wanted = BTreeSet::new();
    for (index, fork_spec) in sandbox.spec.forks.iter().enumerate() {
        let service_ns = fork_spec
            .service
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        let Some(workload) = &fork_spec.fork_of else {
            report.bring_your_own(index, fork_spec, &service_ns);
            continue;
        };
        let forked = match workload.kind {
            WorkloadKind::Deployment => {
                fork_one::<Deployment>(ctx, sandbox, &mut report, index, &service_ns).await?
            }
            WorkloadKind::StatefulSet => {
                fork_one::<StatefulSet>(ctx, sandbox, &mut report, index, &service_ns).await?
            }
        };
        wanted.extend(forked);
    }
    delete_forks(ctx, sandbox, |workload| !wanted.contains(workload)).await?;
    report.key_claim(&ctx.client).await?;
    report.endpoints(&ctx.client).await?;
    let ready = report.publish(&ctx.client, &ctx.metrics).await?;
    let next = if ready {
        Duration::from_secs(60)
    } else {
        status::ROUTES_SETTLE
    };
    let next = expires_at
        .and_then(|at| Duration::try_from(at.duration_since(Timestamp::now())).ok())
        .map_or(next, |left| left.min(next));
    Ok(Action::requeue(next))
}

/// Makes the `index`th fork (a `forkOf` fork of kind `W` in `service_ns`)
/// exist, or reports why it cannot; returns `(namespace, Kind/name)` of the
/// fork it applied.
async fn fork_one<W: Workload>(
    ctx: &Context,
    sandbox: &Sandbox,
    report: &mut status::Report<'_>,
    index: usize,
    service_ns: &str,
) -> Result<Option<(String, String)>, ReconcileError> {
    let fork_spec = &sandbox.spec.forks[index];
    let Some(workload) = &fork_spec.fork_of else {
        return Ok(None);
    };
    let Some(baseline) = workloads::baseline::<W>(&ctx.client, service_ns, &workload.name).await?
    else {
        report.failed(
            index,
            fork_spec,
            "BaselineNotFound",
            format!("{} {service_ns}/{} not found", W::KIND, workload.name),
        );
        return Ok(None);
    };
    let services = Api::<Service>::namespaced(ctx.client.clone(), service_ns)
        .list(&ListParams::default())
        .await?
        .items;
    let namespace = sandbox.namespace().unwrap_or_default();
    let of = ForkOf {
        sandbox_namespace: &namespace,
        sandbox_name: &sandbox.name_any(),
        owner: (service_ns == namespace)
            .then(|| sandbox.controller_owner_ref(&()))
            .flatten(),
        customizations: fork_spec.customizations.as_ref(),
    };
    let desired = match fork::build(&baseline, &services, &of) {
        Ok(desired) => desired,
        Err(error) => {
            let message = error.to_string();
            fail(
                ctx,
                sandbox,
                report,
                index,
                fork_spec,
                "InvalidCustomization",
                message,
            )
            .await;
            return Ok(None);
        }
    };
    let applied = workloads::apply(&ctx.client, &desired).await?;
    if applied.created {
        let note = format!(
            "{} in {service_ns}, a fork of {}",
            applied.workload, workload.name
        );
        ctx.event(sandbox, false, "ForkCreated", note).await;
    }
    report.applied(
        fork_spec,
        applied.workload.clone(),
        applied.namespace.clone(),
    );
    Ok(Some((applied.namespace, applied.workload)))
}

/// Reports a fork that could not be made: in status, as an Event, counted.
async fn fail(
    ctx: &Context,
    sandbox: &Sandbox,
    report: &mut status::Report<'_>,
    index: usize,
    fork_spec: &detour_api::Fork,
    reason: &'static str,
    message: String,
) {
    ctx.metrics
        .fork_failures
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: reason.to_owned(),
        })
        .inc();
    ctx.event(sandbox, true, reason, message.clone()).await;
    report.failed(index, fork_spec, reason, message);
}

async fn cleanup(sandbox: &Sandbox, ctx: &Context) -> Result<Action, ReconcileError> {
    let deleted = delete_forks(ctx, sandbox, |_| true).await?;
    info!(sandbox = %label(sandbox), deleted, "Sandbox deleted; its forks are gone");
    Ok(Action::await_change())
}

/// Deletes the Sandbox's forks (found by its labels, of every kind, in
/// every namespace) that `stale` picks by `(namespace, Kind/name)`, with
/// their volume claims; returns how many.
async fn delete_forks(
    ctx: &Context,
    sandbox: &Sandbox,
    stale: impl Fn(&(String, String)) -> bool,
) -> Result<usize, ReconcileError> {
    Ok(delete_stale::<Deployment>(ctx, sandbox, &stale).await?
        + delete_stale::<StatefulSet>(ctx, sandbox, &stale).await?)
}

async fn delete_stale<W: Workload>(
    ctx: &Context,
    sandbox: &Sandbox,
    stale: &impl Fn(&(String, String)) -> bool,
) -> Result<usize, ReconcileError> {
    let mut deleted = 0;
    for fork in workloads::list::<W>(&ctx.client, sandbox).await? {
        let namespace = fork.namespace().unwrap_or_default();
        let workload = format!("{}/{}", W::KIND, fork.name_any());
        if !stale(&(namespace.clone(), workload.clone())) {
            continue;
        }
        let claims = workloads::delete(&ctx.client, &fork).await?;
        info!(sandbox = %label(sandbox), fork = %format!("{namespace}: {workload}"), ?claims, "fork deleted");
        let note = match claims.is_empty() {
            true => format!("{workload} in {namespace}"),
            false => format!(
                "{workload} in {namespace}, and its claims {}",
                claims.join(", ")
            ),
        };
        ctx.event(sandbox, false, "ForkDeleted", note).await;
        deleted += 1;
    }
    Ok(deleted)
}

/// When the Sandbox's TTL runs out, if it has one that parses.
fn expiry(sandbox: &Sandbox) -> Option<Timestamp> {
    let ttl = humantime_duration(sandbox.spec.ttl.as_deref()?)?;
    let created = sandbox.metadata.creation_timestamp.as_ref()?.0;
    created
        .checked_add(SignedDuration::try_from(ttl).ok()?)
        .ok()
}

fn humantime_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok()
}
