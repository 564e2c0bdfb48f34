//! The single writer of route state. It turns a route source's output into a
//! [`RouteSnapshot`], publishes it to the proxy (an `ArcSwap`, read without
//! locks) and reconciles the kernel's `STEERED` map from it.
//!
//! Order on change: the snapshot is published first, then the map is
//! reconciled, so a destination is never redirected before the proxy knows
//! its service. A source that fails validation changes nothing: the last good
//! routes stay in force.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument, warn};

use crate::{
    datapath::Datapath,
    routes::{RouteInput, RouteSnapshot, RoutesFile, ServiceIds, watch::FileWatch},
};

/// How long to let a burst of file events settle before re-reading.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Default)]
pub struct RouteMetrics {
    routes: Family<KindLabels, Gauge>,
    synced: Gauge,
    problems: Gauge,
    reloads: Family<ResultLabels, Counter>,
}

impl RouteMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "routes",
            "Route state in force, by kind",
            metrics.routes.clone(),
        );
        registry.register(
            "route_source_synced",
            "1 once the route source has delivered a complete, valid configuration",
            metrics.synced.clone(),
        );
        registry.register(
            "route_reloads",
            "Route source reloads, by result",
            metrics.reloads.clone(),
        );
        metrics
    }
}

pub struct RouteUpdater {
    datapath: Datapath,
    store: Arc<ArcSwap<RouteSnapshot>>,
    ids: ServiceIds,
    metrics: RouteMetrics,
    synced: Arc<AtomicBool>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl RouteUpdater {
    pub fn new(datapath: Datapath, metrics: RouteMetrics) -> Self {
        Self {
            datapath,
            store: Arc::new(ArcSwap::from_pointee(RouteSnapshot::default())),
            ids: ServiceIds::default(),
            metrics,
            synced: Arc::new(AtomicBool::new(false)),
            problems: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// True once a complete, valid configuration has been applied: part of
    /// the agent's readiness.
    pub fn synced(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.synced)
    }

    /// Records the problems the source reported in its objects.
    pub fn set_problems(&self, problems: Vec<String>) {
        self.metrics
            .problems
            .set(i64::try_from(problems.len()).unwrap_or(i64::MAX));
        *self.problems.lock().unwrap_or_else(PoisonError::into_inner) = problems;
    }

    /// The problems in force, for `detour status`.
    pub fn problems(&self) -> Arc<Mutex<Vec<String>>> {
        Arc::clone(&self.problems)
    }

    /// Where the data path pinned its maps.
    pub fn pin_dir(&self) -> Option<PathBuf> {
        self.datapath.pin_dir.clone()
    }

    /// Hands the data path back (at shutdown, to detach it).
    pub fn into_datapath(self) -> Datapath {
        self.datapath
    }

    /// The store the proxy reads.
    pub fn store(&self) -> Arc<ArcSwap<RouteSnapshot>> {
        Arc::clone(&self.store)
    }

    /// Publishes a validated routes file and reconciles the kernel map.
    pub fn apply(&mut self, file: &RoutesFile) {
        self.apply_input(&RouteInput::from(file));
    }

    /// Publishes a route source's output and reconciles the kernel map.
    pub fn apply_input(&mut self, input: &RouteInput) {
        let snapshot = Arc::new(RouteSnapshot::build(input, &mut self.ids));
        for (kind, count) in snapshot.counts() {
            self.metrics
                .routes
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.store.store(Arc::clone(&snapshot));
        if let Err(error) = self.datapath.apply(&snapshot) {
            error!(%error, "steered destinations not fully applied; will retry on the next change");
        }
        self.metrics.synced.set(1);
        self.synced.store(true, Ordering::Release);
    }

    /// Re-reads `path` on every change hint until `stop`; returns the data
    /// path so that the caller can detach it.
    #[instrument(skip_all, fields(path = %path.display()))]
    pub async fn follow_file(
        mut self,
        path: PathBuf,
        mut last_text: String,
        mut watch: FileWatch,
        stop: CancellationToken,
    ) -> Datapath {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                hint = watch.changes.recv() => if hint.is_none() { break },
            }
            tokio::time::sleep(SETTLE).await;
            while watch.changes.try_recv().is_ok() {}
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => {
                    // Mid-replace, or deleted: keep the routes in force.
                    warn!(%error, "routes file unreadable; keeping the last good routes");
                    continue;
                }
            };
            if text == last_text {
                continue;
            }
            match RoutesFile::parse(&text) {
                Ok(file) => {
                    self.apply(&file);
                    self.metrics
                        .reloads
                        .get_or_create(&ResultLabels { result: "ok" })
                        .inc();
                    info!("routes reloaded");
                }
                Err(error) => {
                    self.metrics
                        .reloads
                        .get_or_create(&ResultLabels { result: "error" })
                        .inc();
                    error!(%error, "routes file rejected; keeping the last good routes");
                }
            }
            last_text = text;
        }
        self.datapath
    }
}
