//! The fake Kubernetes API server against kube-rs's own client and watcher,
//! with no agent involved: proof that what the agent tests rely on (typed
//! lists, label selectors, watch events, 410 Gone forcing a re-list, held
//! lists) is what a real kube-rs client sees. Needs no root: the fake binds
//! the test's own loopback.

use std::time::Duration;

use detour_tests::{FakeApiServer, unique_name};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::{Value, json};

const FORK_LABEL: &str = "detour.dev/fork";

fn pod(name: &str, fork: bool, ready: bool) -> Value {
    let mut labels = json!({"app": "reviews"});
    if fork {
        labels[FORK_LABEL] = json!("true");
    }
    let ready = if ready { "True" } else { "False" };
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
        "status": {
            "phase": "Running",
            "podIP": "10.248.0.9",
            "podIPs": [{"ip": "10.248.0.9"}],
            "conditions": [{"type": "Ready", "status": ready}],
        },
    })
}

fn sandbox_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("detour.dev", "v1alpha1", "Sandbox"))
}

/// A client configured the way the agent is: from a kubeconfig file.
async fn client(fake: &FakeApiServer) -> Client {
    let path = std::env::temp_dir().join(unique_name("detour-kubeconfig-"));
    fake.write_kubeconfig(&path);
    let kubeconfig = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let _ = std::fs::remove_file(&path);
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).expect("client")
}

/// Polls `check` until it holds, for up to 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 5s: {what}");
}

#[tokio::test]
async fn typed_lists_selectors_gets_and_errors() {
    let fake = FakeApiServer::start_in(None);
    fake.apply(json!({
        "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 8080}]},
    }));
    fake.apply(pod("reviews-fork-1", true, true));
    fake.apply(pod("reviews-1", false, true));
    let client = client(&fake).await;

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    assert!(discovery.has_group("detour.dev"));
    assert!(discovery.has_group("discovery.k8s.io"));

    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list services");
    assert_eq!(services.items.len(), 1);
    let service = &services.items[0];
    assert_eq!(service.metadata.uid.as_deref().map(str::len), Some(36));
    assert!(service.metadata.creation_timestamp.is_some());
    assert!(service.resource_version().is_some());

    let pods = Api::<Pod>::all(client.clone());
    let forks = pods
        .list(&ListParams::default().labels(FORK_LABEL))
        .await
        .expect("list fork pods");
    let names: Vec<String> = forks.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["reviews-fork-1"]);
    let plain = pods
        .list(&ListParams::default().labels(&format!("!{FORK_LABEL},app=reviews")))
        .await
        .expect("list plain pods");
    assert_eq!(plain.items.len(), 1);

    let one = Api::<Pod>::namespaced(client.clone(), "default")
        .get("reviews-1")
        .await
        .expect("get pod");
    assert_eq!(one.name_any(), "reviews-1");

    let unknown = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect_err("configmaps are not served");
    assert!(
        matches!(&unknown, kube::Error::Api(status) if status.code == 404),
        "{unknown:?}"
    );
    assert_eq!(fake.list_requests("pods"), 2);
}

#[tokio::test]
async fn reflector_follows_changes_and_relists_after_410() {
    let fake = FakeApiServer::start_in(None);
    fake.apply(pod("reviews-fork-1", true, true));
    fake.apply(pod("reviews-1", false, true));
    let client = client(&fake).await;
    let (pods, writer) = reflector::store::<Pod>();
    let config = watcher::Config::default().labels(FORK_LABEL);
    let stream = watcher(Api::<Pod>::all(client.clone()), config)
        .default_backoff()
        .reflect(writer);
    tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(5), pods.wait_until_ready())
        .await
        .expect("store synced within 5s")
        .expect("store synced");
    assert_eq!(pods.state().len(), 1, "only the labelled pod");
    eventually("a watch is open", || fake.open_watches("pods") == 1).await;

    // ADDED, MODIFIED, a pod that gains the label (ADDED to this watch).
    fake.apply(pod("reviews-fork-2", true, true));
    fake.apply(pod("reviews-fork-1", true, false));
    fake.apply(pod("reviews-1", true, true));
    let ready_of = |name: &str| {
        pods.state()
            .iter()
            .find(|p| p.name_any() == name)
            .and_then(|p| {
                p.status
                    .clone()?
                    .conditions?
                    .first()
                    .map(|c| c.status.clone())
            })
    };
    eventually("three fork pods, reviews-fork-1 unready", || {
        pods.state().len() == 3 && ready_of("reviews-fork-1").as_deref() == Some("False")
    })
    .await;
    assert_eq!(fake.list_requests("pods"), 1, "no re-list yet");

    // 410 Gone: a change during the gap must still arrive, via the re-list.
    fake.expire_watches();
    fake.apply(pod("reviews-fork-1", true, true));
    eventually("a re-list", || fake.list_requests("pods") == 2).await;
    eventually("reviews-fork-1 ready again", || {
        ready_of("reviews-fork-1").as_deref() == Some("True")
    })
    .await;
    eventually("watching again", || fake.open_watches("pods") == 1).await;

    // DELETED, and a pod losing the label (DELETED to this watch).
    fake.delete("Pod", "default", "reviews-fork-2");
    fake.apply(pod("reviews-1", false, true));
    eventually("one fork pod left", || pods.state().len() == 1).await;

    let requests = fake.requests();
    eprintln!("requests kube-rs made:\n{}", requests.join("\n"));
    assert!(
        requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("timeoutSeconds=")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn custom_resources_and_held_lists() {
    let fake = FakeApiServer::start_in(None);
    let client = client(&fake).await;
    let resource = sandbox_resource();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let sandboxes = writer.as_reader();
    fake.pause_lists("sandboxes");
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(stream.for_each(|_| async {}));

    eventually("the list arrived", || fake.list_requests("sandboxes") == 1).await;
    let held = tokio::time::timeout(Duration::from_millis(500), sandboxes.wait_until_ready());
    assert!(held.await.is_err(), "synced while the list was held");
    fake.apply(json!({
        "apiVersion": "detour.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": "feature-x", "namespace": "default"},
        "spec": {"routingKey": "feature-x", "forks": []},
    }));
    fake.resume_lists("sandboxes");
    tokio::time::timeout(Duration::from_secs(5), sandboxes.wait_until_ready())
        .await
        .expect("synced after resume")
        .expect("store synced");
    let state = sandboxes.state();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].data["spec"]["routingKey"], "feature-x");
    assert_eq!(
        state[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("Sandbox")
    );

    fake.delete("Sandbox", "default", "feature-x");
    eventually("sandbox deleted", || sandboxes.state().is_empty()).await;
}
