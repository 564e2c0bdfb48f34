//! The fake API server's HTTP side: the URL layout of the Kubernetes API
//! (`/api/v1/...`, `/apis/GROUP/VERSION/...`, optionally under
//! `namespaces/NS/`), list, get, and watch as a chunked stream of
//! newline-delimited JSON events that stays open until the timeout, the
//! client leaves, or a compaction ends it.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Method, Request, Response, StatusCode, body::Frame, header};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{
    kinds::{self, Kind},
    selector::Selector,
    store::{self, Filter, Store},
};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the server holds, shared between its tasks and the test.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// Bumped after every change of `state`; waiters re-check on it.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
pub struct State {
    pub store: Store,
    /// Resources whose lists are held back until resumed.
    pub paused: BTreeSet<String>,
    /// Requests so far: (verb, resource) -> count.
    pub counts: BTreeMap<(&'static str, String), usize>,
    /// Watches open now, per resource.
    pub open_watches: BTreeMap<String, usize>,
    /// Every request, as `GET /path?query`.
    pub log: Vec<String>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            state: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes every waiter.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let result = change(&mut self.state());
        self.changed.send_modify(|n| *n += 1);
        result
    }
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let uri = request.uri().clone();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let path = uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let target = resource_path(&segments);
    let verb = match (&target, watching) {
        (Some((_, _, Some(_))), _) => "get",
        (Some(_), true) => "watch",
        (Some(_), false) => "list",
        (None, _) => "other",
    };
    let resource = target.as_ref().map_or("", |(kind, _, _)| kind.resource);
    shared.update(|state| {
        state.log.push(format!("{} {uri}", request.method()));
        *state.counts.entry((verb, resource.to_owned())).or_default() += 1;
    });

    if request.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server only reads",
        );
    }
    if let Some(document) = kinds::document(&segments) {
        return json_response(StatusCode::OK, &document);
    }
    let Some((kind, namespace, name)) = target else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    if let Some(name) = name {
        let object = shared
            .state()
            .store
            .get(kind, namespace.unwrap_or("default"), name);
        return match object {
            Some(object) => json_response(StatusCode::OK, &object),
            None => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", kind.resource),
            ),
        };
    }
    let selector = match Selector::parse(query.get("labelSelector").map_or("", String::as_str)) {
        Ok(selector) => selector,
        Err(message) => return error(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let filter = Filter {
        namespace: namespace.map(str::to_owned),
        selector,
    };
    if watching {
        return watch(shared, kind, filter, &query);
    }
    wait_unpaused(&shared, kind.resource).await;
    let list = shared.state().store.list(kind, &filter);
    json_response(StatusCode::OK, &list)
}

/// `[api, v1, (namespaces, NS,) RESOURCE (, NAME)]` or the same under
/// `[apis, GROUP, VERSION]`: the kind, namespace and name addressed.
fn resource_path<'a>(
    segments: &[&'a str],
) -> Option<(&'static Kind, Option<&'a str>, Option<&'a str>)> {
    let (api_version, rest) = match segments {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, resource, name) = match rest {
        [resource] => (None, resource, None),
        ["namespaces", namespace, resource] => (Some(*namespace), resource, None),
        ["namespaces", namespace, resource, name] => (Some(*namespace), resource, Some(*name)),
        _ => return None,
    };
    Some((kinds::kind_at(&api_version, resource)?, namespace, name))
}

/// Holds a list while a test keeps its resource paused.
async fn wait_unpaused(shared: &Shared, resource: &str) {
    let mut changed = shared.changed.subscribe();
    loop {
        changed.borrow_and_update();
        let paused = shared.state().paused.contains(resource);
        if !paused || changed.changed().await.is_err() {
            return;
        }
    }
}

/// Starts a watch stream. `resourceVersion` absent, empty or `0` means
/// "from now", starting with an ADDED event per current object (and, with
/// `sendInitialEvents=true`, a bookmark marking the end of those).
fn watch(
    shared: Arc<Shared>,
    kind: &'static Kind,
    filter: Filter,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid resourceVersion {rv:?}"),
                );
            }
        },
    };
    let initial_end = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(stream_events(
        shared,
        kind,
        filter,
        from,
        initial_end,
        timeout,
        tx,
    ));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok(Frame::data(line)), rx))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Feeds one watch: the replay after `from`, then each change as it
/// happens. Ends at the timeout, when the client leaves, or on compaction.
async fn stream_events(
    shared: Arc<Shared>,
    kind: &'static Kind,
    filter: Filter,
    from: Option<u64>,
    initial_end: bool,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changed = shared.changed.subscribe();
    let start = {
        let state = shared.state();
        let store = &state.store;
        match from {
            Some(rv) if store.too_old(rv) => None,
            Some(rv) => Some((store.epoch, rv, Vec::new())),
            None => {
                let mut events: Vec<Value> = store
                    .matching(kind, &filter)
                    .into_iter()
                    .map(|object| json!({"type": "ADDED", "object": object}))
                    .collect();
                if initial_end {
                    events.push(initial_events_end(kind, store.resource_version()));
                }
                Some((store.epoch, store.resource_version(), events))
            }
        }
    };
    let Some((epoch, mut cursor, first)) = start else {
        let _ = tx.send(line(&store::expired_event())).await;
        return;
    };
    let _open = OpenWatch::new(shared.clone(), kind.resource);
    for event in first {
        if tx.send(line(&event)).await.is_err() {
            return;
        }
    }
    loop {
        changed.borrow_and_update();
        let events = {
            let state = shared.state();
            if state.store.epoch != epoch {
                return;
            }
            let (events, next) = state.store.events_after(kind, &filter, cursor);
            cursor = next;
            events
        };
        for event in events {
            if tx.send(line(&event)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            result = changed.changed() => if result.is_err() { return },
            () = tokio::time::sleep_until(deadline) => return,
            () = tx.closed() => return,
        }
    }
}

/// Counts a watch as open for as long as it lives.
struct OpenWatch {
    shared: Arc<Shared>,
    resource: &'static str,
}

impl OpenWatch {
    fn new(shared: Arc<Shared>, resource: &'static str) -> Self {
        shared.update(|state| *state.open_watches.entry(resource.to_owned()).or_default() += 1);
        Self { shared, resource }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.shared.update(|state| {
            if let Some(open) = state.open_watches.get_mut(self.resource) {
                *open = open.saturating_sub(1);
            }
        });
    }
}

/// The bookmark that ends a streaming list's initial events.
fn initial_events_end(kind: &Kind, rv: u64) -> Value {
    json!({
        "type": "BOOKMARK",
        "object": {
            "kind": kind.kind,
            "apiVersion": kind.api_version,
            "metadata": {
                "resourceVersion": rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        },
    })
}

fn line(event: &Value) -> Bytes {
    let mut text = event.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed_unsync(Full::new(Bytes::from(
        body.to_string(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(status, &store::status(status.as_u16(), reason, message))
}
