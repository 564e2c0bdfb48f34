//! An in-process fake Kubernetes API server (HTTP/1.1, no TLS, no auth)
//! that speaks the real list/watch protocol, so that the real agent, with
//! its real kube-rs client, can run against it.
//!
//! It serves the kinds the agent watches (Services, EndpointSlices, Pods,
//! Sandboxes, RouteGroups; see [`kinds::KINDS`]):
//! - a LIST returns everything that matches `labelSelector`, with the
//!   current `metadata.resourceVersion` (`limit`, `continue` and
//!   `resourceVersionMatch` are ignored: one page always);
//! - a WATCH (`watch=true`) streams `ADDED`/`MODIFIED`/`DELETED` events after
//!   its `resourceVersion`, one JSON object per line, until `timeoutSeconds`;
//!   from a version older than the last [`FakeApiServer::expire_watches`] it
//!   gets an `ERROR` event with a 410 `Expired` Status, which makes a kube-rs
//!   watcher re-list.
//!
//! How the agent reaches it: the listening socket is created by a short-lived
//! thread that has first joined the agent's network namespace (`setns(2)`
//! applies to the calling thread only), so it binds that namespace's
//! `127.0.0.1`. A socket keeps the namespace it was made in, so the server
//! itself runs on an ordinary thread of the test process, and the kubeconfig
//! says `server: http://127.0.0.1:PORT` exactly as a local cluster's would.
//! Nothing is exposed on the node's bridge, where pods could reach it.

pub mod kinds;
mod selector;
mod serve;
mod store;

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::Arc,
    thread::JoinHandle,
};

use serde_json::Value;
use tokio::sync::oneshot;

use self::serve::Shared;

/// The fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1` of the network namespace at `netns`
    /// (a path such as `/run/netns/NAME`; needs root), or of the test's own
    /// namespace with `None`.
    pub fn start_in(netns: Option<&str>) -> Self {
        let listener = match netns {
            Some(path) => {
                let path = path.to_owned();
                std::thread::spawn(move || bind_in(&path))
                    .join()
                    .unwrap_or_else(|_| panic!("binding the fake API server panicked"))
            }
            None => TcpListener::bind("127.0.0.1:0").expect("bind the fake API server"),
        };
        let addr = listener.local_addr().expect("fake API server address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking fake API server socket");
        let shared = Arc::new(Shared::new());
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn({
                let shared = shared.clone();
                move || run(listener, shared, stop)
            })
            .expect("start the fake API server thread");
        Self {
            shared,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server: no TLS, no credentials, namespace
    /// `default`.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster:
      server: {url}
users:
  - name: fake
    user: {{}}
contexts:
  - name: fake
    context:
      cluster: fake
      user: fake
      namespace: default
current-context: fake
",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(path, self.kubeconfig())
            .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
    }

    /// Creates or replaces an object (by `kind`, `metadata.namespace`
    /// (default `default`) and `metadata.name`): watchers see ADDED or
    /// MODIFIED. Returns it as stored, with its new `resourceVersion`.
    pub fn apply(&self, object: Value) -> Value {
        self.shared
            .update(|state| state.store.apply(object))
            .unwrap_or_else(|e| panic!("fake API server apply: {e}"))
    }

    /// Deletes an object: watchers see DELETED. Panics if it does not exist.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Value {
        let served = kinds::kind_named(kind)
            .unwrap_or_else(|| panic!("the fake API server does not serve kind {kind}"));
        self.shared
            .update(|state| state.store.delete(served, namespace, name))
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} to delete"))
    }

    /// One object as stored, if it exists.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let served = kinds::kind_named(kind)?;
        self.shared.state().store.get(served, namespace, name)
    }

    /// Compacts history: every open watch ends, and every client resuming
    /// from a version it had gets 410 Gone and must re-list.
    pub fn expire_watches(&self) {
        self.shared.update(|state| state.store.expire());
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.state().store.resource_version()
    }

    /// How many LIST requests `resource` (plural, e.g. `pods`) has had.
    pub fn list_requests(&self, resource: &str) -> usize {
        self.requests_of("list", resource)
    }

    /// How many WATCH requests `resource` has had.
    pub fn watch_requests(&self, resource: &str) -> usize {
        self.requests_of("watch", resource)
    }

    fn requests_of(&self, verb: &'static str, resource: &str) -> usize {
        let state = self.shared.state();
        state
            .counts
            .get(&(verb, resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Watches of `resource` open now.
    pub fn open_watches(&self, resource: &str) -> usize {
        let state = self.shared.state();
        state.open_watches.get(resource).copied().unwrap_or(0)
    }

    /// Every request so far, as `GET /path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state().log.clone()
    }

    /// Holds every LIST of `resource` (now and to come) until
    /// [`FakeApiServer::resume_lists`]; the requests are counted on arrival.
    pub fn pause_lists(&self, resource: &str) {
        self.shared
            .update(|state| state.paused.insert(resource.to_owned()));
    }

    /// Answers the held LISTs of `resource`, and later ones at once.
    pub fn resume_lists(&self, resource: &str) {
        self.shared.update(|state| state.paused.remove(resource));
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Joins the network namespace at `path` (this thread only) and binds there.
fn bind_in(path: &str) -> TcpListener {
    use std::os::fd::AsRawFd;
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open network namespace {path}: {e}"));
    // SAFETY: setns(2) on a namespace fd we hold open; it moves only the
    // calling thread, which ends right after binding.
    let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        joined,
        0,
        "setns({path}): {} (needs root)",
        std::io::Error::last_os_error()
    );
    TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("bind the fake API server in {path}: {e}"))
}

/// The server thread: a single-threaded runtime serving until shut down.
/// Dropping the runtime ends every connection and watch.
fn run(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("fake API server runtime");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("fake API server listener");
        loop {
            let stream = tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let shared = shared.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(serve::handle(shared, request).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
