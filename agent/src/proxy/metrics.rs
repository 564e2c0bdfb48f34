//! The proxy's Prometheus metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Default)]
pub struct ProxyMetrics {
    connections: Family<ServiceLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    upstream_errors: Family<ReasonLabels, Counter>,
}

impl ProxyMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "connections",
            "Redirected connections accepted by the proxy, by service",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections to the proxy closed without forwarding, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failures to reach the destination, by reason",
            metrics.upstream_errors.clone(),
        );
        metrics
    }

    pub fn connection(&self, service: &str) {
        self.connections
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
            })
            .inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}
