//! The controller's composition root: the Kubernetes client, the metrics
//! endpoint, leader election, and — while this replica leads — the
//! `Controller` over Sandboxes (woken by their fork workloads and by the
//! baseline Deployments and StatefulSets they copy), until SIGTERM or a
//! lost Lease.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use detour_api::{FORK_LABEL, SANDBOX_LABEL, SANDBOX_NAMESPACE_LABEL, Sandbox};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, signal::unix::SignalKind};
use tracing::{info, warn};

use crate::{
    fork::Workload,
    leader::{self, LeaseConfig},
    metrics::{self, Metrics, ResultLabels},
    reconcile::{Context, error_policy, reconcile},
    workloads::MANAGER,
};

/// What the controller is started with (its flags).
#[derive(Debug, Clone)]
pub struct Config {
    pub metrics_addr: SocketAddr,
    pub lease: LeaseConfig,
}

/// Runs until SIGTERM or SIGINT (exit 0), or until the Lease is lost
/// (an error: the replica restarts and stands by).
pub async fn run(client: Client, config: Config) -> anyhow::Result<()> {
    let mut registry = Registry::with_prefix("detour_controller");
    let metrics = Metrics::new(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.metrics_addr))?;
    tokio::spawn(metrics::serve(
        listener,
        Arc::new(registry),
        Arc::clone(&ready),
    ));

    let mut leading = leader::elect(client.clone(), &config.lease).await?;
    // Standing by is ready too: a replica that can take over is healthy.
    ready.store(true, Ordering::Release);
    info!(identity = %config.lease.identity, lease = %config.lease.name, "waiting to lead");
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
        led = leading.wait_for(|l| *l) => { led.context("lease manager stopped")?; }
    }
    info!(identity = %config.lease.identity, "leading: reconciling Sandboxes");
    metrics.leader.set(1);

    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: Some(config.lease.identity.clone()),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
    });
    let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<()>();
    let mut still_leading = leading.clone();
    tokio::spawn(async move {
        if still_leading.wait_for(|l| !*l).await.is_ok() {
            let _ = lost_tx.send(());
        }
    });
    let lost_lease = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let lost_lease = Arc::clone(&lost_lease);
        async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
                _ = &mut lost => {
                    warn!("the Lease was lost: stopping, to stand by after a restart");
                    lost_lease.store(true, Ordering::Release);
                }
            }
        }
    };
    count_forks(client.clone(), metrics.clone());
    controller(client)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            let result = if result.is_ok() { "ok" } else { "error" };
            metrics
                .reconciles
                .get_or_create(&ResultLabels { result })
                .inc();
            async {}
        })
        .await;
    // Dropping the channel releases the Lease for the next leader.
    drop(leading);
    tokio::time::sleep(Duration::from_millis(200)).await;
    if lost_lease.load(Ordering::Acquire) {
        bail!("lost the Lease");
    }
    info!("detour-controller stopped");
    Ok(())
}

fn controller(client: Client) -> Controller<Sandbox> {
    let sandboxes: Api<Sandbox> = Api::all(client.clone());
    let controller = Controller::new(sandboxes, watcher::Config::default());
    let controller = watch_kind::<Deployment>(controller, &client);
    watch_kind::<StatefulSet>(controller, &client)
}

/// Wakes Sandboxes when their forks of kind `W`, or the baselines of that
/// kind they copy, change.
fn watch_kind<W>(controller: Controller<Sandbox>, client: &Client) -> Controller<Sandbox>
where
    W: Workload + Send + Sync + 'static,
{
    let workloads: Api<W> = Api::all(client.clone());
    let store = controller.store();
    controller
        // A fork changed (edited by hand, deleted, pods ready): its Sandbox.
        .watches(
            workloads.clone(),
            watcher::Config::default().labels(FORK_LABEL),
            |fork| {
                let labels = fork.labels();
                let name = labels.get(SANDBOX_LABEL)?;
                let namespace = labels.get(SANDBOX_NAMESPACE_LABEL)?;
                Some(ObjectRef::<Sandbox>::new(name).within(namespace))
            },
        )
        // A baseline changed: every Sandbox that forks it.
        .watches(workloads, watcher::Config::default(), move |baseline| {
            let (ns, name) = (
                baseline.namespace().unwrap_or_default(),
                baseline.name_any(),
            );
            store
                .state()
                .iter()
                .filter(|s| {
                    let own = s.namespace().unwrap_or_default();
                    s.spec.forks.iter().any(|f| {
                        f.fork_of
                            .as_ref()
                            .is_some_and(|w| w.name == name && w.kind.as_str() == W::KIND)
                            && f.service.namespace.as_deref().unwrap_or(&own) == ns
                    })
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
}

/// Keeps the `forks` gauge at the number of fork workloads the controller
/// made, of every kind (every 10 s).
fn count_forks(client: Client, metrics: Metrics) {
    tokio::spawn(async move {
        let params = kube::api::ListParams::default().labels(SANDBOX_LABEL);
        let deployments: Api<Deployment> = Api::all(client.clone());
        let stateful_sets: Api<StatefulSet> = Api::all(client);
        loop {
            if let (Ok(d), Ok(s)) = (
                deployments.list_metadata(&params).await,
                stateful_sets.list_metadata(&params).await,
            ) {
                let forks = d.items.len() + s.items.len();
                metrics.forks.set(i64::try_from(forks).unwrap_or(i64::MAX));
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
}
