//! The controller's metrics (Prometheus text at `/metrics`), with
//! `/healthz` (the process answers) and `/readyz` (it leads, or stands by
//! ready to lead) on one small HTTP endpoint.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// What the controller counts.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles, by result (`ok`, `error`).
    pub reconciles: Family<ResultLabels, Counter>,
    /// Fork failures reported in status, by reason.
    pub fork_failures: Family<ReasonLabels, Counter>,
    /// Fork Deployments applied by the last reconciles, all Sandboxes.
    pub forks: Gauge,
    /// Seconds from a Sandbox's creation to its first `Ready`.
    pub time_to_ready: Histogram,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            fork_failures: Family::default(),
            forks: Gauge::default(),
            time_to_ready: Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            leader: Gauge::default(),
        };
        registry.register(
            "reconciles",
            "Sandbox reconciles, by result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "fork_failures",
            "Forks that could not be made, by reason (as in the Sandbox's status)",
            metrics.fork_failures.clone(),
        );
        registry.register(
            "forks",
            "Fork Deployments the controller keeps",
            metrics.forks.clone(),
        );
        registry.register(
            "sandbox_ready_seconds",
            "Time from a Sandbox's creation to its first Ready",
            metrics.time_to_ready.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease",
            metrics.leader.clone(),
        );
        metrics
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, ready: Arc<AtomicBool>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint listening");
    }
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "metrics accept failed");
                continue;
            }
        };
        let (registry, ready) = (Arc::clone(&registry), Arc::clone(&ready));
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(request.uri().path(), &registry, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                warn!(%peer, %error, "metrics connection failed");
            }
        });
    }
}

fn respond(path: &str, registry: &Registry, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => (StatusCode::OK, body),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding failed\n".to_owned(),
                ),
            }
        }
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" if ready.load(Ordering::Acquire) => (StatusCode::OK, "ready\n".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
