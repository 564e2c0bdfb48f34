//! The single writer of route state. It turns a route source's output into a
//! [`RouteSnapshot`], publishes it to the proxy (an `ArcSwap`, read without
//! locks) and reconciles the kernel's `STEERED` map from it. Sources (the
//! routes file, `routes::watch`; the Kubernetes API, `k8s::source`) only
//! send it their input, over a feed ([`RouteUpdater::run`]): it alone owns
//! the snapshot, the data path and the reconnect sweep.
//!
//! Order on change: the snapshot is published first, then the map is
//! reconciled, so a destination is never redirected before the proxy knows
//! its service. A source that fails validation changes nothing: the last good
//! routes stay in force.
//!
//! Route problems shown by `detour status` come from two places: the source
//! (objects it ignored) and the data path (destinations `STEERED` could not
//! hold). Each is replaced only by its own next report, so neither hides the
//! other; both go to the agent's health registry as the updater's report.
//! The routes are synced, a condition of readiness, once the first input
//! has been applied. Every update is timed, in two phases: building the snapshot and
//! applying it to the kernel.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument};

use crate::{
    datapath::{Applied, Datapath},
    health::{Area, Condition, Health, Reporter},
    reconnect::SweepHandle,
    routes::{
        RouteInput, RouteSnapshot, RoutesFile, ServiceIds,
        feed::{RouteUpdates, SourceUpdate},
    },
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapErrorLabels {
    map: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// 100 µs .. ~13 s, doubling.
fn update_duration() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

#[derive(Debug)]
pub struct RouteMetrics {
    routes: Family<KindLabels, Gauge>,
    synced: Gauge,
    problems: Gauge,
    reloads: Family<ResultLabels, Counter>,
    not_installed: Gauge,
    write_errors: Family<MapErrorLabels, Counter>,
    update_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
}

impl RouteMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            routes: Family::default(),
            synced: Gauge::default(),
            problems: Gauge::default(),
            reloads: Family::default(),
            not_installed: Gauge::default(),
            write_errors: Family::default(),
            update_duration: Family::new_with_constructor(update_duration),
        };
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
        registry.register(
            "route_problems",
            "Route problems in force: objects the source ignored, destinations not steered",
            metrics.problems.clone(),
        );
        registry.register(
            "steered_not_installed",
            "Steered destinations the STEERED map could not hold (not steered: they go direct)",
            metrics.not_installed.clone(),
        );
        registry.register(
            "bpf_map_write_errors",
            "Writes to an eBPF map the kernel refused, by map and error (full: E2BIG)",
            metrics.write_errors.clone(),
        );
        registry.register(
            "route_update_duration_seconds",
            "Time to apply a route update, by phase: build (the snapshot), apply (the kernel map)",
            metrics.update_duration.clone(),
        );
        metrics
    }

    fn applied(&self, applied: &Applied) {
        self.not_installed
            .set(i64::try_from(applied.not_installed).unwrap_or(i64::MAX));
        for (error, count) in [
            ("full", applied.full_errors),
            ("other", applied.other_errors),
        ] {
            if count > 0 {
                self.write_errors
                    .get_or_create(&MapErrorLabels {
                        map: detour_common::maps::STEERED,
                        error,
                    })
                    .inc_by(count);
            }
        }
    }

    fn timed(&self, phase: &'static str, elapsed: Duration) {
        self.update_duration
            .get_or_create(&PhaseLabels { phase })
            .observe(elapsed.as_secs_f64());
    }
}

/// The condition of readiness the updater registers.
pub const SYNCED: &str = "routes synced";

/// Route problems from each origin; `detour status` shows both.
#[derive(Debug, Default)]
struct Problems {
    source: Vec<String>,
    datapath: Vec<String>,
    forks: Vec<String>,
}

impl Problems {
    fn all(&self) -> Vec<String> {
        self.source
            .iter()
            .chain(&self.datapath)
            .chain(&self.forks)
            .cloned()
            .collect()
    }
}

pub struct RouteUpdater {
    datapath: Datapath,
    store: Arc<ArcSwap<RouteSnapshot>>,
    ids: ServiceIds,
    metrics: RouteMetrics,
    synced: Condition,
    problems: Problems,
    /// Where `problems` are shown, both kinds.
    reporter: Reporter,
    /// Destinations steered by the last snapshot, and where newly steered
    /// ones are sent to close the connections that bypass the proxy.
    steered: HashSet<SocketAddr>,
    sweep: Option<SweepHandle>,
    /// Whether some fork pod has no cgroup yet (the kubelet is making it):
    /// the fork programs are applied again every [`FORK_POD_RETRY`].
    forks_pending: bool,
}

/// How often fork pods without a cgroup yet are looked for again.
const FORK_POD_RETRY: Duration = Duration::from_millis(100);

impl RouteUpdater {
    /// An updater of `datapath` that registers its condition (routes
    /// synced) and its problems with `health`.
    pub fn new(datapath: Datapath, metrics: RouteMetrics, health: &Health) -> Self {
        Self {
            datapath,
            store: Arc::new(ArcSwap::from_pointee(RouteSnapshot::default())),
            ids: ServiceIds::default(),
            metrics,
            synced: health.condition(SYNCED),
            problems: Problems::default(),
            reporter: health.reporter("route updater", Area::Routes),
            steered: HashSet::new(),
            sweep: None,
            forks_pending: false,
        }
    }

    /// Newly steered destinations go to `sweep` from the next update on.
    pub fn set_sweeper(&mut self, sweep: SweepHandle) {
        self.sweep = Some(sweep);
    }

    /// Whether a complete, valid configuration has been applied (the
    /// condition of readiness this updater registered).
    pub fn synced(&self) -> Condition {
        self.synced.clone()
    }

    /// Records the problems the source reported in its objects, replacing
    /// its earlier ones (the data path's stay).
    fn set_problems(&mut self, problems: Vec<String>) {
        self.problems.source = problems;
        self.publish_problems();
    }

    fn publish_problems(&self) {
        let all = self.problems.all();
        self.metrics
            .problems
            .set(i64::try_from(all.len()).unwrap_or(i64::MAX));
        self.reporter.report(all);
    }

    /// Applies what the sources send on `updates` until `stop`; returns the
    /// data path so that the caller can detach it. Sources that stop early
    /// (a failed first sync) leave the routes in force until `stop`.
    #[instrument(skip_all)]
    pub async fn run(mut self, mut updates: RouteUpdates, stop: CancellationToken) -> Datapath {
        loop {
            let retry = async {
                if self.forks_pending {
                    tokio::time::sleep(FORK_POD_RETRY).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let update = tokio::select! {
                () = stop.cancelled() => break,
                update = updates.next() => update,
                () = retry => {
                    self.apply_forks(&self.store.load_full());
                    continue;
                }
            };
            match update {
                Some(SourceUpdate::Reloaded(input)) => {
                    self.apply_input(&input);
                    self.metrics
                        .reloads
                        .get_or_create(&ResultLabels { result: "ok" })
                        .inc();
                }
                Some(SourceUpdate::Rejected) => {
                    self.metrics
                        .reloads
                        .get_or_create(&ResultLabels { result: "error" })
                        .inc();
                }
                Some(SourceUpdate::Translated { input, problems }) => {
                    self.set_problems(problems);
                    self.apply_input(&input);
                }
                None => {
                    stop.cancelled().await;
                    break;
                }
            }
        }
        self.datapath
    }

    /// Where the data path pinned its maps.
    pub fn pin_dir(&self) -> Option<PathBuf> {
        self.datapath.pin_dir.clone()
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
    fn apply_input(&mut self, input: &RouteInput) {
        let started = Instant::now();
        let snapshot = Arc::new(RouteSnapshot::build(input, &mut self.ids));
        let build = started.elapsed();
        self.metrics.timed("build", build);
        for (kind, count) in snapshot.counts() {
            self.metrics
                .routes
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.store.store(Arc::clone(&snapshot));
        let started = Instant::now();
        let applied = self.datapath.apply(&snapshot);
        let apply = started.elapsed();
        self.metrics.timed("apply", apply);
        self.metrics.applied(&applied);
        info!(
            build_ms = millis(build),
            apply_ms = millis(apply),
            steered = applied.installed,
            added_or_changed = applied.added_or_changed,
            removed = applied.removed,
            not_installed = applied.not_installed,
            "routes applied"
        );
        let problems = applied.problems(self.datapath.steered_capacity());
        for problem in &problems {
            if !self.problems.datapath.contains(problem) {
                error!(%problem, "routes not fully applied to the kernel");
            }
        }
        self.problems.datapath = problems;
        self.apply_forks(&snapshot);
        self.sweep_newly_steered(&snapshot);
        self.metrics.synced.set(1);
        self.synced.set(true);
    }

    /// Makes the fork programs serve the snapshot's fork pods, and
    /// publishes every problem.
    fn apply_forks(&mut self, snapshot: &RouteSnapshot) {
        let forks = self.datapath.apply_forks(snapshot);
        if !snapshot.fork_pods.is_empty() && !self.forks_pending {
            info!(
                pods = forks.pods,
                pending = forks.pending,
                dependencies = forks.dependencies,
                "fork pods applied"
            );
        }
        self.forks_pending = forks.pending > 0;
        for problem in &forks.problems {
            if !self.problems.forks.contains(problem) {
                error!(%problem, "fork pods not fully applied");
            }
        }
        self.problems.forks = forks.problems;
        self.publish_problems();
    }

    /// Sends the destinations this snapshot steers and the last did not (all
    /// of them at the first) to the sweeper.
    fn sweep_newly_steered(&mut self, snapshot: &RouteSnapshot) {
        // Connections to a destination steered for fork pods only are not
        // closed: everyone else's go direct to it by design.
        let now: HashSet<SocketAddr> = snapshot
            .destinations
            .iter()
            .filter(|(_, d)| !d.fork_sources_only)
            .map(|(dst, _)| *dst)
            .collect();
        if let Some(sweep) = &self.sweep {
            let batch = now
                .difference(&self.steered)
                .filter_map(|dst| {
                    let service = snapshot.service(snapshot.destinations.get(dst)?.service_id)?;
                    Some((*dst, Arc::clone(&service.label)))
                })
                .collect();
            sweep.sweep(batch);
        }
        self.steered = now;
    }
}

/// A duration in milliseconds, to the microsecond, for log fields.
fn millis(duration: Duration) -> f64 {
    // Exact below 2^53 µs (285 years).
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::Problems;

    #[test]
    fn source_and_datapath_problems_do_not_overwrite_each_other() {
        let mut problems = Problems {
            source: vec!["Sandbox a/b: no such service".into()],
            datapath: vec!["2 of 4 steered destinations are not installed".into()],
            forks: vec![],
        };
        assert_eq!(problems.all().len(), 2);
        problems.source.clear();
        assert_eq!(
            problems.all(),
            ["2 of 4 steered destinations are not installed"]
        );
    }
}
