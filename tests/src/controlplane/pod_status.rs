//! The status a kubelet writes for a pod it runs, as the node simulator
//! writes it: Running, its addresses, Ready (or not) as its readiness
//! probe would say, every container started.

use serde_json::{Value, json};

use crate::topology::{NODE_IP4, Pod};

/// The status of pod `object`, running as `pod`, `ready` or not.
pub(super) fn status(object: &Value, pod: &Pod, ready: bool) -> Value {
    let now = "2026-01-01T00:00:00Z";
    let flag = if ready { "True" } else { "False" };
    let containers: Vec<Value> = object["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": NODE_IP4.to_string(),
        "hostIPs": [{"ip": NODE_IP4.to_string()}],
        "podIP": pod.ip4.to_string(),
        "podIPs": [{"ip": pod.ip4.to_string()}, {"ip": pod.ip6.to_string()}],
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": flag},
            {"type": "Ready", "status": flag},
        ],
        "containerStatuses": containers,
    }})
}
