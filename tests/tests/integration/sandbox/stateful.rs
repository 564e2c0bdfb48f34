//! A forked database on the real control plane: baseline `db` is a
//! StatefulSet running PostgreSQL (Debian's, through the node simulator's
//! `test-host` image) with a volume claim, and `items`, an HTTP service that
//! keeps its items there. A Sandbox forks both: `db` with `forkOf:
//! StatefulSet` and an init container that seeds the fork's own claim from
//! the baseline (`pg_dump | psql`: a fork's own pods reach the baseline of
//! the service they fork), `items` with `forkOf: Deployment`. Keyed requests
//! reach the `items` fork, which reads the seeded rows and writes to the
//! fork database; the baseline's rows are untouched and unkeyed requests
//! see only them. Deleting the Sandbox removes the forks and the fork's
//! claim; the baseline's claim stays.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{Cluster, controlplane::kubelet::NODE_NAME, require_root};
use serde_json::{Value, json};

const DB_IP: &str = "10.96.0.21";
const ITEMS_IP: &str = "10.96.0.22";
const PG: u16 = 5432;
const HTTP: u16 = 8080;
const KEY: &str = "baggage: detour-routing-key=feature-x";

/// PostgreSQL's server programs, as `$BIN` of the scripts below.
const FIND_BIN: &str = "BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); \
                        as_pg() { setpriv --reuid postgres --regid postgres --init-groups \"$@\"; }";

/// The container: a new database in the claim (`/mnt`) unless it holds one.
fn postgres_script() -> String {
    format!(
        "set -e; {FIND_BIN}; chown postgres /mnt
if [ ! -s /mnt/pg/PG_VERSION ]; then
  as_pg $BIN/initdb --auth=trust --no-sync -U postgres -D /mnt/pg >/dev/null
  echo 'host all all 0.0.0.0/0 trust' >> /mnt/pg/pg_hba.conf
fi
exec setpriv --reuid postgres --regid postgres --init-groups $BIN/postgres -D /mnt/pg \
  -h 0.0.0.0 -p {PG} -k /mnt -c fsync=off -c shared_buffers=16MB"
    )
}

/// The fork's init container: on the claim's first use, a new database
/// filled from the baseline's (at the Service's address, which the fork's
/// own pod reaches) before the server starts.
fn seed_script() -> String {
    format!(
        "set -e; {FIND_BIN}; chown postgres /mnt
[ -s /mnt/pg/PG_VERSION ] && exit 0
as_pg $BIN/initdb --auth=trust --no-sync -U postgres -D /mnt/pg >/dev/null
echo 'host all all 0.0.0.0/0 trust' >> /mnt/pg/pg_hba.conf
as_pg $BIN/pg_ctl -D /mnt/pg -o \"-h '' -k /mnt -c fsync=off\" -w start >/dev/null
$BIN/pg_dump -h {DB_IP} -p {PG} -U postgres postgres | $BIN/psql -q -h /mnt -U postgres postgres
as_pg $BIN/pg_ctl -D /mnt/pg -w stop >/dev/null"
    )
}

fn workloads() -> Value {
    let pod_labels = |app: &str| json!({"app": app});
    let postgres = json!({
        "name": "postgres", "image": "detour.dev/test-host",
        "command": ["sh", "-c", postgres_script()],
        "ports": [{"containerPort": PG}],
        "volumeMounts": [{"name": "data", "mountPath": "/mnt"}],
    });
    let items_server = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/items.py");
    let items = json!({
        "name": "items", "image": "detour.dev/test-host",
        "command": ["/usr/bin/python3", items_server, HTTP.to_string(), "items", DB_IP],
        "ports": [{"containerPort": HTTP}],
    });
    let service = |name: &str, ip: &str, port: u16, protocol: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "selector": pod_labels(name),
                     "ports": [{"name": protocol, "port": port, "targetPort": port,
                                "appProtocol": protocol}]},
        })
    };
    json!({"apiVersion": "v1", "kind": "List", "items": [
        service("db", DB_IP, PG, "tcp"),
        service("items", ITEMS_IP, HTTP, "http"),
        {
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "serviceName": "db", "replicas": 1,
                "selector": {"matchLabels": pod_labels("db")},
                "template": {"metadata": {"labels": pod_labels("db")},
                             "spec": {"containers": [postgres]}},
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}},
                }],
            },
        },
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "items", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": pod_labels("items")},
                "template": {"metadata": {"labels": pod_labels("items")},
                             "spec": {"containers": [items]}},
            },
        },
    ]})
}

fn sandbox() -> Value {
    let seed = json!({
        "name": "seed", "image": "detour.dev/test-host",
        "command": ["sh", "-c", seed_script()],
        "volumeMounts": [{"name": "data", "mountPath": "/mnt"}],
    });
    let items_fork = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/items.py");
    json!({
        "apiVersion": "detour.dev/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "feature-x", "namespace": "default"},
        "spec": {"routingKey": "feature-x", "forks": [
            {"service": {"name": "db"}, "forkOf": {"kind": "StatefulSet", "name": "db"},
             "customizations": {"patch": {"type": "json", "patch": [
                 {"op": "add", "path": "/spec/template/spec/initContainers", "value": [seed]},
             ]}}},
            {"service": {"name": "items"}, "forkOf": {"kind": "Deployment", "name": "items"},
             "customizations": {"patch": {"type": "json", "patch": [
                 {"op": "replace", "path": "/spec/template/spec/containers/0/command",
                  "value": ["/usr/bin/python3", items_fork, HTTP.to_string(), "items-fork", DB_IP]},
             ]}}},
        ]},
    })
}

/// `curl` from the client pod to `items`: (who served, body).
fn items(cluster: &Cluster, keyed: bool, post: Option<&str>) -> (String, String) {
    let url = match post {
        Some(item) => format!("http://{ITEMS_IP}:{HTTP}/?item={item}"),
        None => format!("http://{ITEMS_IP}:{HTTP}/"),
    };
    let mut args = vec!["-sS", "-m", "10", "-D", "-"];
    if keyed {
        args.extend(["-H", KEY]);
    }
    if post.is_some() {
        args.extend(["-X", "POST"]);
    }
    args.push(&url);
    let output = cluster
        .net
        .pod("client")
        .exec_in(&cluster.cgroup, "curl", &args);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let served = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Served-By: "))
        .unwrap_or("nobody")
        .trim()
        .to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    (served, body.to_owned())
}

/// Claims labelled with the Sandbox, and every claim's name.
fn claims(cluster: &Cluster) -> (Vec<String>, Vec<String>) {
    let names = |selector: Option<&str>| {
        let mut args = vec!["get", "pvc", "-n", "default"];
        if let Some(selector) = selector {
            args.extend(["-l", selector]);
        }
        cluster.json(&args)["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    (names(Some("detour.dev/sandbox=feature-x")), names(None))
}

#[test]
fn a_stateful_fork_seeded_from_baseline_serves_the_sandbox_and_goes_with_its_claims() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("sf");
    cluster.apply(&workloads().to_string());
    let db = cluster.ready_pods("default", "app=db");
    let items_pods = cluster.ready_pods("default", "app=items");
    cluster.route_cluster_ip(DB_IP, &db[0]);
    cluster.route_cluster_ip(ITEMS_IP, &items_pods[0]);
    let baseline_db = cluster.pods("default", "app=db").remove(0);
    let psql = |pod: &Value, sql: &str| {
        let ip = pod["status"]["podIP"].as_str().expect("pod IP");
        let output = cluster.exec_in_pod(
            pod,
            "psql",
            &["-h", ip, "-U", "postgres", "-tAX", "-c", sql],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    psql(
        &baseline_db,
        "CREATE TABLE items (name text); INSERT INTO items VALUES ('from-baseline')",
    );

    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    let controller = cluster.controller(&kubeconfig, "controller-0");
    let _agent = cluster.agent().arg("--node-name").arg(NODE_NAME).spawn();
    cluster.apply(&sandbox().to_string());
    let waited = cluster.plane.kubectl_output(&[
        "wait",
        "--for=condition=Ready",
        "sandbox/feature-x",
        "--timeout=90s",
    ]);
    assert!(
        waited.status.success(),
        "Sandbox not Ready: {}\n--- controller ---\n{}",
        cluster
            .plane
            .kubectl(&["get", "sandbox", "feature-x", "-o", "yaml"]),
        controller.logs()
    );
    let status = cluster.json(&["get", "sandbox", "feature-x"])["status"].clone();
    assert_eq!(
        status["forks"][0]["workload"], "StatefulSet/db-feature-x",
        "{status}"
    );

    // The fork serves the sandbox from the seeded copy, and writes there.
    assert_eq!(
        items(&cluster, true, None),
        ("items-fork".into(), "from-baseline".into())
    );
    assert_eq!(items(&cluster, true, Some("from-fork")).1, "added");
    assert_eq!(
        items(&cluster, true, None),
        ("items-fork".into(), "from-baseline,from-fork".into())
    );
    // Baseline: untouched, and all that unkeyed requests see.
    assert_eq!(
        items(&cluster, false, None),
        ("items".into(), "from-baseline".into())
    );
    assert_eq!(
        psql(&baseline_db, "SELECT string_agg(name, ',') FROM items"),
        "from-baseline"
    );
    let (fork_claims, all_claims) = claims(&cluster);
    assert_eq!(fork_claims, ["data-db-feature-x-0"]);
    assert!(
        all_claims.contains(&"data-db-0".to_owned()),
        "{all_claims:?}"
    );

    // The Sandbox deleted: its forks and the fork's claim go; baseline's stays.
    cluster.plane.kubectl(&[
        "delete",
        "sandbox",
        "feature-x",
        "-n",
        "default",
        "--wait=false",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (fork_claims, all_claims) = claims(&cluster);
        let forks = cluster.pods("default", "detour.dev/sandbox=feature-x");
        if fork_claims.is_empty() && forks.is_empty() {
            assert_eq!(all_claims, ["data-db-0"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s, claims {fork_claims:?} and {} fork pods are left\n{}",
            forks.len(),
            controller.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        items(&cluster, true, None),
        ("items".into(), "from-baseline".into())
    );
}
