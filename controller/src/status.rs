//! A Sandbox's status as one reconcile found it: per fork, its workload and
//! ready pods; the conditions `ForksReady`, `KeyClaimed` and `Ready` (both),
//! each with a reason and a message a person can act on;
//! `observedGeneration` and `expiresAt`. `kubectl wait
//! --for=condition=Ready sandbox/NAME` waits on `Ready`.

use std::collections::BTreeMap;

use detour_api::{Fork, ForkStatus, RouteGroup, Sandbox, SandboxStatus, fork_selector_labels};
use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};

use crate::{
    metrics::Metrics,
    sandbox::{ReconcileError, label},
};

/// How long the forks must have been ready before the Sandbox is Ready: the
/// agents' watch, settle and map update take about 200 ms; five times that.
pub const ROUTES_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// One fork as this reconcile left it.
struct ForkReport {
    status: ForkStatus,
    /// Namespace and labels of its pods.
    pods: Option<(String, BTreeMap<String, String>)>,
    /// Why it is not there (reason, message).
    failure: Option<(&'static str, String)>,
}

pub struct Report<'a> {
    sandbox: &'a Sandbox,
    expires_at: Option<Timestamp>,
    forks: Vec<ForkReport>,
    /// (reason, message) when another object holds the key.
    conflict: Option<String>,
}

impl<'a> Report<'a> {
    pub fn new(sandbox: &'a Sandbox, expires_at: Option<Timestamp>) -> Self {
        Self {
            sandbox,
            expires_at,
            forks: Vec::new(),
            conflict: None,
        }
    }

    fn service(&self, fork: &Fork) -> String {
        let ns = fork
            .service
            .namespace
            .clone()
            .unwrap_or_else(|| self.sandbox.namespace().unwrap_or_default());
        format!("{ns}/{}", fork.service.name)
    }

    /// A fork whose pods the user runs, picked by its selector.
    pub fn bring_your_own(&mut self, _index: usize, fork: &Fork, _service_ns: &str) {
        let pods = fork
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .map(|labels| (self.sandbox.namespace().unwrap_or_default(), labels));
        self.forks.push(ForkReport {
            status: ForkStatus {
                service: self.service(fork),
                ..ForkStatus::default()
            },
            pods,
            failure: None,
        });
    }

    /// A `forkOf` fork that could not be made.
    pub fn failed(&mut self, _index: usize, fork: &Fork, reason: &'static str, message: String) {
        self.forks.push(ForkReport {
            status: ForkStatus {
                service: self.service(fork),
                ..ForkStatus::default()
            },
            pods: None,
            failure: Some((reason, message)),
        });
    }

    /// A `forkOf` fork applied as `workload` (`Kind/name`) in `namespace`.
    pub fn applied(&mut self, fork: &Fork, workload: String, namespace: String) {
        let baseline = fork
            .fork_of
            .as_ref()
            .map(|w| w.name.clone())
            .unwrap_or_default();
        let labels = fork_selector_labels(
            &self.sandbox.namespace().unwrap_or_default(),
            &self.sandbox.name_any(),
            &baseline,
        );
        self.forks.push(ForkReport {
            status: ForkStatus {
                service: self.service(fork),
                workload: Some(workload),
                ..ForkStatus::default()
            },
            pods: Some((namespace, labels)),
            failure: None,
        });
    }

    /// Whether this Sandbox holds its key: the oldest Sandbox or RouteGroup
    /// claiming a key wins (as the agents decide).
    pub async fn key_claim(&mut self, client: &Client) -> Result<(), ReconcileError> {
        let key = &self.sandbox.spec.routing_key;
        let mine = claim_order(
            self.sandbox.creation_timestamp().map(|t| t.0),
            &label(self.sandbox),
        );
        let sandboxes = Api::<Sandbox>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let groups = Api::<RouteGroup>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let older = sandboxes
            .iter()
            .filter(|s| &s.spec.routing_key == key)
            .map(|s| {
                (
                    claim_order(s.creation_timestamp().map(|t| t.0), &label(s)),
                    format!("Sandbox {}", label(s)),
                )
            })
            .chain(
                groups
                    .iter()
                    .filter(|g| &g.spec.routing_key == key)
                    .map(|g| {
                        let label =
                            format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any());
                        (
                            claim_order(g.creation_timestamp().map(|t| t.0), &label),
                            format!("RouteGroup {label}"),
                        )
                    }),
            )
            .filter(|(order, _)| *order < mine)
            .min();
        self.conflict = older.map(|(_, holder)| format!("routing key {key:?} is held by {holder}, which claimed it first; choose another key"));
        Ok(())
    }

    /// Counts each fork's ready pods and their addresses.
    pub async fn endpoints(&mut self, client: &Client) -> Result<(), ReconcileError> {
        for fork in &mut self.forks {
            let Some((ns, labels)) = &fork.pods else {
                continue;
            };
            let selector = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let pods = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels(&selector))
                .await?;
            let ready: Vec<String> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                .collect();
            fork.status.ready_replicas = i32::try_from(ready.len()).unwrap_or(i32::MAX);
            fork.status.endpoints = ready;
        }
        Ok(())
    }

    /// Writes the status; returns whether the Sandbox is Ready.
    pub async fn publish(self, client: &Client, metrics: &Metrics) -> Result<bool, ReconcileError> {
        let generation = self.sandbox.metadata.generation;
        let previous = self.sandbox.status.clone().unwrap_or_default().conditions;
        let failure = self.forks.iter().find_map(|f| f.failure.clone());
        let waiting: Vec<&str> = self
            .forks
            .iter()
            .filter(|f| f.failure.is_none() && f.status.ready_replicas == 0)
            .map(|f| f.status.service.as_str())
            .collect();
        let forks_ready = match (&failure, waiting.is_empty()) {
            (Some((reason, message)), _) => (false, *reason, message.clone()),
            (None, false) => (
                false,
                "PodsNotReady",
                format!("no ready pod yet for the fork of {}", waiting.join(", ")),
            ),
            (None, true) => (true, "PodsReady", "every fork has ready pods".to_owned()),
        };
        let key = match &self.conflict {
            Some(message) => (false, "KeyConflict", message.clone()),
            None => (
                true,
                "Claimed",
                format!(
                    "requests with key {:?} reach the forks",
                    self.sandbox.spec.routing_key
                ),
            ),
        };
        // Agents learn of ready fork pods from their own watches, a moment
        // after this controller does: Ready waits until the forks have been
        // ready for `ROUTES_SETTLE`, so that a client acting on it finds
        // its requests routed.
        let settled = previous
            .iter()
            .find(|c| c.type_ == "ForksReady" && c.status == "True")
            .is_some_and(|c| {
                Timestamp::now().duration_since(c.last_transition_time.0)
                    >= k8s_openapi::jiff::SignedDuration::try_from(ROUTES_SETTLE)
                        .unwrap_or_default()
            });
        let ready = forks_ready.0 && key.0 && settled;
        let was_ready = previous
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready
            && !was_ready
            && let Some(created) = self.sandbox.creation_timestamp()
        {
            let waited = Timestamp::now().duration_since(created.0).as_secs_f64();
            metrics.time_to_ready.observe(waited.max(0.0));
        }
        let ready_condition = if ready {
            (
                true,
                "Ready",
                "send requests with the routing key".to_owned(),
            )
        } else if !forks_ready.0 {
            (false, forks_ready.1, forks_ready.2.clone())
        } else if !key.0 {
            (false, key.1, key.2.clone())
        } else {
            (
                false,
                "RoutesSettling",
                "forks ready; the node agents are taking the routes in".to_owned(),
            )
        };
        let conditions = [
            ("ForksReady", forks_ready),
            ("KeyClaimed", key),
            ("Ready", ready_condition),
        ]
        .into_iter()
        .map(|(kind, (ok, reason, message))| {
            condition(&previous, kind, ok, reason, message, generation)
        })
        .collect();
        let status = SandboxStatus {
            conditions,
            forks: self.forks.into_iter().map(|f| f.status).collect(),
            expires_at: self.expires_at.map(Time),
            observed_generation: generation,
        };
        let api: Api<Sandbox> = Api::namespaced(
            client.clone(),
            &self.sandbox.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &self.sandbox.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": status})),
        )
        .await?;
        Ok(ready)
    }
}

/// A condition, keeping its transition time when its status is unchanged.
fn condition(
    previous: &[Condition],
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(
            || Time(Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

fn claim_order(created: Option<Timestamp>, label: &str) -> (Timestamp, String) {
    (created.unwrap_or(Timestamp::MAX), label.to_owned())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
