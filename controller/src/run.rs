//! The controller's composition root: the Kubernetes client, the
//! `Controller` over Sandboxes (woken by their fork Deployments and by the
//! baseline Deployments they copy), and its life until SIGTERM.

use std::sync::Arc;

use detour_api::{FORK_LABEL, SANDBOX_LABEL, SANDBOX_NAMESPACE_LABEL, Sandbox};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    runtime::{Controller, reflector::ObjectRef, watcher},
};
use tracing::{info, warn};

use crate::reconcile::{Context, error_policy, reconcile};

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let sandboxes: Api<Sandbox> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    let controller = Controller::new(sandboxes, watcher::Config::default());
    let store = controller.store();
    let context = Arc::new(Context {
        client: client.clone(),
    });
    info!("detour-controller started");
    controller
        // A fork changed (edited by hand, deleted, pods ready): its Sandbox.
        .watches(
            deployments.clone(),
            watcher::Config::default().labels(FORK_LABEL),
            |fork| {
                let labels = fork.labels();
                let name = labels.get(SANDBOX_LABEL)?;
                let namespace = labels.get(SANDBOX_NAMESPACE_LABEL)?;
                Some(ObjectRef::<Sandbox>::new(name).within(namespace))
            },
        )
        // A baseline changed: every Sandbox that forks it.
        .watches(deployments, watcher::Config::default(), move |baseline| {
            let (ns, name) = (
                baseline.namespace().unwrap_or_default(),
                baseline.name_any(),
            );
            store
                .state()
                .iter()
                .filter(|s| {
                    s.spec.forks.iter().any(|f| {
                        f.fork_of.as_ref().is_some_and(|w| w.name == name)
                            && f.service
                                .namespace
                                .as_deref()
                                .unwrap_or(&s.namespace().unwrap_or_default())
                                == ns
                    })
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "reconcile error");
            }
        })
        .await;
    info!("detour-controller stopped");
    Ok(())
}
