//! The admin socket: HTTP/1.1 + JSON on a Unix socket (mode 0600, so only
//! root reaches it; never on TCP), bound by [`crate::socket_file`]: a stale
//! socket left by a dead agent is replaced; a live one only by the agent
//! taking over from it (a hitless upgrade); otherwise two agents on one node
//! is a mistake worth refusing.

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    Method, Request, Response, StatusCode, body::Frame, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{
    net::UnixListener,
    sync::{broadcast::error::RecvError, watch},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{AdminContext, api, explain, flows, routes};
use crate::{
    handover::Successor,
    socket_file::{self, SocketFile},
};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (explain and log-level bodies are tiny).
const MAX_BODY: usize = 64 * 1024;

/// Serves until `stop`, then removes the socket file (unless a successor
/// agent has replaced it).
pub async fn serve(
    mut listener: UnixListener,
    mut file: SocketFile,
    ctx: Arc<AdminContext>,
    mut successor: watch::Receiver<Successor>,
    stop: CancellationToken,
) {
    info!(path = %file.path.display(), "admin socket listening");
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            // A successor that took the path and died: the node's CLI must
            // find this agent again.
            Ok(()) = successor.changed() => {
                if *successor.borrow_and_update() == Successor::None {
                    socket_file::reclaim(&mut listener, &mut file);
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    continue;
                }
            },
        };
        let ctx = Arc::clone(&ctx);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let ctx = Arc::clone(&ctx);
                let stop = stop.clone();
                async move { Ok::<_, Infallible>(handle(request, &ctx, stop).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, "admin connection ended");
            }
        });
    }
    file.remove_if_ours();
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    ctx: &AdminContext,
    stop: CancellationToken,
) -> Response<Body> {
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match (method, path.as_str()) {
        (Method::GET, "/status") => {
            let bypassing = ctx.bypassing(all_steered).await;
            json(StatusCode::OK, &ctx.status(bypassing))
        }
        (Method::GET, "/routes") => {
            let snapshot = ctx.routes.load();
            json(
                StatusCode::OK,
                &routes::routes(
                    &snapshot,
                    query.get("key").map(String::as_str),
                    query.get("service").map(String::as_str),
                ),
            )
        }
        (Method::GET, "/flows") => {
            let mut flows = flows::flows(&ctx.flows);
            flows.bypassing_connections = ctx.bypassing(all_steered).await;
            json(StatusCode::OK, &flows)
        }
        (Method::GET, "/trace") => trace(
            ctx,
            query.get("key").cloned(),
            query.get("service").cloned(),
            stop,
        ),
        (Method::POST, "/explain") => match read_json::<api::ExplainRequest>(request).await {
            Ok(body) => match explain::explain(&ctx.routes.load(), &ctx.keys, &body) {
                Ok(mut explanation) => {
                    let service = explanation.service.clone();
                    explanation.bypassing_connections = ctx
                        .bypassing(|snapshot| {
                            let id = snapshot.service_named(&service).map(|s| s.id);
                            snapshot
                                .destinations
                                .iter()
                                .filter(|(_, d)| Some(d.service_id) == id)
                                .map(|(addr, _)| *addr)
                                .collect()
                        })
                        .await;
                    json(StatusCode::OK, &explanation)
                }
                Err(error) => error_response(StatusCode::NOT_FOUND, error),
            },
            Err(error) => error_response(StatusCode::BAD_REQUEST, error),
        },
        (Method::PUT, "/log-level") => match read_json::<api::LogLevel>(request).await {
            Ok(body) => match ctx.log.as_ref().map(|log| log.set(&body.filter)) {
                Some(Ok(filter)) => {
                    info!(%filter, "log filter changed");
                    json(StatusCode::OK, &api::LogLevel { filter })
                }
                Some(Err(error)) => error_response(StatusCode::BAD_REQUEST, error),
                None => error_response(
                    StatusCode::CONFLICT,
                    "the log filter cannot be changed in this process".into(),
                ),
            },
            Err(error) => error_response(StatusCode::BAD_REQUEST, error),
        },
        (_, path) => error_response(StatusCode::NOT_FOUND, format!("no admin endpoint {path}")),
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(bytes) => response(status, "application/json", Bytes::from(bytes)),
        Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

fn error_response(status: StatusCode, error: String) -> Response<Body> {
    let body = serde_json::to_vec(&api::ApiError { error }).unwrap_or_default();
    response(status, "application/json", Bytes::from(body))
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<hyper::body::Incoming>,
) -> Result<T, String> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the request body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// A chunked stream of decision events, one JSON object per line. A reader
/// that falls behind loses the oldest events and gets `{"lost": N}`.
fn trace(
    ctx: &AdminContext,
    key: Option<String>,
    service: Option<String>,
    stop: CancellationToken,
) -> Response<Body> {
    let receiver = ctx.flows.subscribe();
    let lines = futures::stream::unfold((receiver, stop), move |(mut receiver, stop)| {
        let key = key.clone();
        let service = service.clone();
        async move {
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return None,
                    next = receiver.recv() => next,
                };
                let line = match next {
                    Ok(event) => {
                        if !flows::wanted(&event, key.as_deref(), service.as_deref()) {
                            continue;
                        }
                        serde_json::to_vec(&flows::trace_event(&event)).unwrap_or_default()
                    }
                    Err(RecvError::Lagged(lost)) => format!("{{\"lost\":{lost}}}").into_bytes(),
                    Err(RecvError::Closed) => return None,
                };
                let mut line = line;
                line.push(b'\n');
                return Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
                    (receiver, stop),
                ));
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(lines.boxed())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Every steered destination.
fn all_steered(
    snapshot: &crate::routes::RouteSnapshot,
) -> std::collections::HashSet<std::net::SocketAddr> {
    snapshot.destinations.keys().copied().collect()
}
