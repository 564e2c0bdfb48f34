//! The Kubernetes route source: one reflector per watched kind (see
//! [`WATCHED`](super::WATCHED)), and a loop that re-translates the stores
//! into routes after changes (debounced) and when a Sandbox's TTL runs out,
//! and sends each translation to the route updater.
//!
//! Nothing is applied before every store has finished its initial list: the
//! agent is not ready until then, and never routes on half a picture.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        discovery::v1::EndpointSlice,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use super::{
    crd::{FORK_LABEL, RouteGroup, Sandbox},
    translate::{ClusterState, translate},
};
use crate::{
    health::{Area, Condition, Health, Reporter},
    routes::feed::{RouteFeed, SourceUpdate},
};

/// How long to let a burst of changes settle before re-translating.
const SETTLE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot configure a Kubernetes client (in a pod: service account; elsewhere: KUBECONFIG)"
    )]
    Client(#[source] kube::Error),
}

/// The reflector stores, kept up to date by background tasks.
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    sandboxes: Store<Sandbox>,
    groups: Store<RouteGroup>,
}

impl Stores {
    fn state(&self, node_name: Option<&String>) -> ClusterState {
        ClusterState {
            node_name: node_name.cloned(),
            services: self.services.state(),
            slices: self.slices.state(),
            pods: self.pods.state(),
            sandboxes: self.sandboxes.state(),
            groups: self.groups.state(),
        }
    }

    async fn wait_until_ready(&self) -> bool {
        let ready = tokio::join!(
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.sandboxes.wait_until_ready(),
            self.groups.wait_until_ready(),
        );
        ready.0.is_ok() && ready.1.is_ok() && ready.2.is_ok() && ready.3.is_ok() && ready.4.is_ok()
    }
}

/// A client from the environment: in-cluster config, or `KUBECONFIG`.
pub async fn client() -> Result<Client, SourceError> {
    Client::try_default().await.map_err(SourceError::Client)
}

/// The watches that fail right now, by kind, with why: route problems in
/// `detour status`. And a condition of readiness, that none is refused for
/// lack of permission: an agent whose ServiceAccount cannot read what it
/// must is not ready.
#[derive(Debug, Clone)]
pub struct WatchFailures {
    failures: Arc<Mutex<BTreeMap<String, (String, bool)>>>,
    reporter: Reporter,
    permitted: Condition,
}

impl WatchFailures {
    /// Registers the watches' problems and condition with `health`.
    pub fn register(health: &Health) -> Self {
        let permitted = health.condition("kubernetes watches permitted");
        permitted.set(true);
        Self {
            failures: Arc::default(),
            reporter: health.reporter("kubernetes watches", Area::Routes),
            permitted,
        }
    }

    fn set(&self, kind: &str, failure: Option<&watcher::Error>) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failure {
            Some(error) => {
                failures.insert(
                    kind.to_owned(),
                    (
                        format!("cannot watch {kind} objects: {error}"),
                        is_forbidden(error),
                    ),
                );
            }
            None => {
                failures.remove(kind);
            }
        }
        let permitted = !failures.values().any(|(_, forbidden)| *forbidden);
        self.permitted.set(permitted);
        self.reporter
            .report(failures.values().map(|(m, _)| m.clone()).collect());
    }
}

/// Whether the API server refused for lack of permission (403).
fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}

/// Starts a reflector for `K` whose every event pokes `changed`; a failing
/// watch is recorded in `failures` until it recovers.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    failures: WatchFailures,
    stop: CancellationToken,
) -> Store<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                event = stream.next() => match event {
                    Some(Ok(_)) => {
                        failures.set(&kind, None);
                        changed.notify_one();
                    }
                    // The backoff retries; say what failed, here and in
                    // `detour status` (a missing permission names itself).
                    Some(Err(error)) => {
                        warn!(%kind, %error, "watch failed; retrying");
                        failures.set(&kind, Some(&error));
                    }
                    None => return,
                },
            }
        }
    });
    store
}

/// Follows the cluster until `stop` (or until the updater stops), sending
/// each translation to `feed`. Nothing is sent before every store has
/// finished its initial list.
#[instrument(skip_all)]
pub async fn follow(
    client: Client,
    feed: RouteFeed,
    failures: WatchFailures,
    node_name: Option<String>,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let any = watcher::Config::default();
    let stores = Stores {
        services: reflect(
            Api::all(client.clone()),
            any.clone(),
            Arc::clone(&changed),
            failures.clone(),
            stop.clone(),
        ),
        slices: reflect(
            Api::all(client.clone()),
            any.clone(),
            Arc::clone(&changed),
            failures.clone(),
            stop.clone(),
        ),
        pods: reflect(
            Api::all(client.clone()),
            any.clone().labels(FORK_LABEL),
            Arc::clone(&changed),
            failures.clone(),
            stop.clone(),
        ),
        sandboxes: reflect(
            Api::all(client.clone()),
            any.clone(),
            Arc::clone(&changed),
            failures.clone(),
            stop.clone(),
        ),
        groups: reflect(
            Api::all(client),
            any,
            Arc::clone(&changed),
            failures.clone(),
            stop.clone(),
        ),
    };
    tokio::select! {
        () = stop.cancelled() => return,
        ready = stores.wait_until_ready() => if !ready {
            return;
        },
    }
    info!("Kubernetes stores synced");

    let mut reported = BTreeSet::new();
    loop {
        let translation = translate(&stores.state(node_name.as_ref()), Timestamp::now());
        for problem in &translation.problems {
            if !reported.contains(problem) {
                warn!(%problem, "ignored in the cluster's route objects");
            }
        }
        reported = translation.problems.iter().cloned().collect();
        let expiry = sleep_until(translation.next_expiry);
        let update = SourceUpdate::Translated {
            input: translation.input,
            problems: translation.problems,
        };
        if !feed.send(update).await {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = changed.notified() => tokio::time::sleep(SETTLE).await,
            () = expiry => info!("a Sandbox's TTL ran out"),
        }
    }
}

/// Sleeps until `at` (forever when `None`).
fn sleep_until(at: Option<Timestamp>) -> impl Future<Output = ()> {
    let wait = at.map(|at| {
        let millis = at.duration_since(Timestamp::now()).as_millis().max(0);
        Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)) + Duration::from_millis(10)
    });
    async move {
        match wait {
            Some(wait) => tokio::time::sleep(wait).await,
            None => std::future::pending().await,
        }
    }
}
