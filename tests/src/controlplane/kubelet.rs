//! The part of a kubelet (and of a scheduler) these tests need, for one
//! node: it binds unscheduled pods to the node, runs each bound pod's
//! container as a real local process in a network namespace of its own on
//! the topology's bridge (pods start in parallel, each in a thread), and
//! writes the pod's status through the API as a kubelet does (podIP, Ready, containerStatuses), so that the real
//! EndpointSlice controller makes the slices the agent watches. A deleted
//! pod's process is stopped, its namespace removed, and the pod object
//! released (the kubelet's final delete).
//!
//! It follows pods with `kubectl get pods --watch` (restarted when the API
//! server goes away) and acts with `kubectl`; nothing is faked beyond the
//! container runtime.
//!
//! The images it runs are in [`super::containers`].
//!
//! A pod annotated `test.detour.dev/ready: "false"` runs but reports not
//! ready, as a failing readiness probe would; removing the annotation makes
//! it ready again.

use std::{
    collections::HashMap,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::{Value, json};

use super::{
    containers::{Running, start},
    pod_status::status,
    tool,
};
use crate::{cmd::Proc, netns::Netns, servers::TempDir, topology::Pod};

/// The node's name in the API.
pub const NODE_NAME: &str = "detour-test-node";
/// The annotation that holds a pod unready.
pub const READY_ANNOTATION: &str = "test.detour.dev/ready";
/// Host numbers of pods on the node's subnets (builders use 2 and up).
const HOSTS: std::ops::Range<u8> = 100..251;

/// The simulator's thread; stopped (with every pod it runs) on drop.
#[derive(Debug)]
pub struct NodeSim {
    stop: Arc<AtomicBool>,
    watch: Arc<Mutex<Option<Proc>>>,
    thread: Option<JoinHandle<()>>,
    /// Volumes of the pods (dropped after the thread, with every pod).
    _data: TempDir,
}

#[derive(Clone)]
struct Kubectl {
    node: String,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.node))
            .arg("--")
            .arg(tool("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args);
        command
    }

    /// Runs kubectl with `input`; failures are logged, not fatal: the next
    /// event retries.
    fn run(&self, args: &[&str], input: Option<&Value>) {
        use std::io::Write;
        let mut child = match self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => return eprintln!("node simulator: kubectl: {error}"),
        };
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            let _ = stdin.write_all(input.to_string().as_bytes());
        }
        drop(child.stdin.take());
        if let Ok(output) = child.wait_with_output()
            && !output.status.success()
        {
            eprintln!(
                "node simulator: kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
}

/// A pod being started (in a thread of its own, so that many pods start in
/// parallel as a kubelet starts them), or running.
enum Slot {
    Starting {
        host: u8,
        thread: std::thread::JoinHandle<Option<Running>>,
    },
    Running(Running),
}

impl Slot {
    fn host(&self) -> u8 {
        match self {
            Self::Starting { host, .. } => *host,
            Self::Running(running) => running.pod.ip4.octets()[3],
        }
    }
}

impl NodeSim {
    /// Registers the node and starts following pods. Each pod's process
    /// runs in a cgroup of its own, `<pods_cgroup>/pod<uid>`, as a kubelet
    /// with the cgroupfs driver makes them.
    pub fn start(node: &Netns, base: String, kubeconfig: PathBuf, pods_cgroup: PathBuf) -> Self {
        let kubectl = Kubectl {
            node: node.path(),
            kubeconfig,
        };
        kubectl.run(
            &["apply", "-f", "-"],
            Some(&json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}},
            })),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Arc::new(Mutex::new(None));
        let node = node.name().to_owned();
        let data = TempDir::new("detour-node-data-");
        let data_dir = data.0.clone();
        let thread = std::thread::Builder::new()
            .name("node-simulator".into())
            .spawn({
                let (stop, watch) = (Arc::clone(&stop), Arc::clone(&watch));
                move || {
                    let place = Place {
                        node: &node,
                        base: &base,
                        pods_cgroup: &pods_cgroup,
                        data: &data_dir,
                    };
                    follow(&kubectl, &place, &stop, &watch)
                }
            })
            .expect("node simulator thread");
        Self {
            stop,
            watch,
            thread: Some(thread),
            _data: data,
        }
    }
}

impl Drop for NodeSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watch) = self.watch.lock().expect("watch").take() {
            drop(watch);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn follow(kubectl: &Kubectl, place: &Place<'_>, stop: &AtomicBool, watch: &Mutex<Option<Proc>>) {
    let mut running: HashMap<String, Slot> = HashMap::new();
    // Host numbers go round rather than being reused at once: the kernel
    // tears a deleted namespace's veth down asynchronously.
    let mut next_host = HOSTS.start;
    while !stop.load(Ordering::SeqCst) {
        let child = kubectl
            .command(&[
                "get",
                "pods",
                "-A",
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let stdout = child.stdout.take().expect("piped stdout");
        *watch.lock().expect("watch") = Some(Proc::new(child));
        let events =
            serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
        for event in events {
            let Ok(event) = event else { break };
            if stop.load(Ordering::SeqCst) {
                break;
            }
            handle(kubectl, place, &mut running, &mut next_host, &event);
        }
        // The API server went away (or we stop): watch again.
        drop(watch.lock().expect("watch").take());
        std::thread::sleep(Duration::from_millis(200));
    }
    // No pod may outlive the simulator: wait for those still starting.
    for (_, slot) in running.drain() {
        if let Slot::Starting { thread, .. } = slot {
            let _ = thread.join();
        }
    }
}

/// Where the node runs its pods: the node's namespace, the prefix of pod
/// namespaces' names, the cgroup that holds each pod's, and the directory
/// of their volumes.
struct Place<'a> {
    node: &'a str,
    base: &'a str,
    pods_cgroup: &'a Path,
    data: &'a Path,
}

fn handle(
    kubectl: &Kubectl,
    place: &Place<'_>,
    running: &mut HashMap<String, Slot>,
    next_host: &mut u8,
    event: &Value,
) {
    let pod = &event["object"];
    let meta = &pod["metadata"];
    let (Some(uid), Some(name), Some(namespace)) = (
        meta["uid"].as_str(),
        meta["name"].as_str(),
        meta["namespace"].as_str(),
    ) else {
        return;
    };
    if event["type"] == "DELETED" {
        running.remove(uid);
        return;
    }
    if !meta["deletionTimestamp"].is_null() {
        running.remove(uid);
        // The kubelet's part of a graceful delete: the containers are gone.
        kubectl.run(
            &[
                "delete",
                "pod",
                name,
                "-n",
                namespace,
                "--grace-period=0",
                "--force",
                "--wait=false",
            ],
            None,
        );
        return;
    }
    match pod["spec"]["nodeName"].as_str() {
        None | Some("") => {
            let binding = json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
            });
            kubectl.run(&["create", "-f", "-"], Some(&binding));
            return;
        }
        Some(NODE_NAME) => {}
        Some(_) => return,
    }
    let ready = meta["annotations"][READY_ANNOTATION].as_str() != Some("false");
    if !running.contains_key(uid) {
        let Some(host) = reserve_host(running, next_host) else {
            eprintln!("node simulator: no host number left; pod {name} left pending");
            return;
        };
        let (kubectl, node, base, data, pod) = (
            kubectl.clone(),
            place.node.to_owned(),
            place.base.to_owned(),
            place.data.to_owned(),
            pod.clone(),
        );
        let cgroup = place.pods_cgroup.join(format!("pod{uid}"));
        let thread = std::thread::spawn(move || {
            let mut started = start(&node, &base, host, (&cgroup, &data), &pod)?;
            patch_status(&kubectl, &pod, &started.pod, ready);
            started.ready = Some(ready);
            Some(started)
        });
        running.insert(uid.to_owned(), Slot::Starting { host, thread });
        return;
    }
    let finished =
        matches!(running.get(uid), Some(Slot::Starting { thread, .. }) if thread.is_finished());
    if finished && let Some(Slot::Starting { thread, .. }) = running.remove(uid) {
        match thread.join().ok().flatten() {
            Some(started) => {
                running.insert(uid.to_owned(), Slot::Running(started));
            }
            None => return,
        }
    }
    let Some(Slot::Running(entry)) = running.get_mut(uid) else {
        return;
    };
    if entry.ready != Some(ready) {
        entry.ready = Some(ready);
        patch_status(kubectl, pod, &entry.pod, ready);
    }
}

/// The next free host number, going round (a deleted namespace's veth is
/// torn down asynchronously: a number is not reused at once).
fn reserve_host(running: &HashMap<String, Slot>, next_host: &mut u8) -> Option<u8> {
    let used: Vec<u8> = running.values().map(Slot::host).collect();
    let host = HOSTS
        .clone()
        .chain(HOSTS.clone())
        .skip(usize::from(*next_host - HOSTS.start))
        .take(HOSTS.len())
        .find(|h| !used.contains(h))?;
    *next_host = if host == HOSTS.end - 1 {
        HOSTS.start
    } else {
        host + 1
    };
    Some(host)
}

/// Writes the pod's status as a kubelet does.
fn patch_status(kubectl: &Kubectl, object: &Value, pod: &Pod, ready: bool) {
    let meta = &object["metadata"];
    let (Some(name), Some(namespace)) = (meta["name"].as_str(), meta["namespace"].as_str()) else {
        return;
    };
    kubectl.run(
        &[
            "patch",
            "pod",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status(object, pod, ready).to_string(),
        ],
        None,
    );
}
