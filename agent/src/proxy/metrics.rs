//! The proxy's Prometheus metrics (catalogue in `docs/metrics.md`).

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::error::ProxyError;
use crate::metrics::Label;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: Label,
    destination: &'static str,
    sandbox: Label,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabels {
    sandbox: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KafkaRecordLabels {
    sandbox: Label,
    topic: Label,
    outcome: &'static str,
}

#[derive(Debug)]
pub struct ProxyMetrics {
    connections: Family<ServiceLabels, Counter>,
    protocols: Family<ProtocolLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ProtocolLabels, Histogram>,
    fallbacks: Family<ReasonLabels, Counter>,
    inherited: Family<SandboxLabels, Counter>,
    request_errors: Family<ReasonLabels, Counter>,
    upstream_errors: Family<ReasonLabels, Counter>,
    h2_errors: Family<ReasonLabels, Counter>,
    kafka_errors: Family<ReasonLabels, Counter>,
    kafka_records: Family<KafkaRecordLabels, Counter>,
    splices: Family<RelayLabels, Counter>,
    origins: Family<ReasonLabels, Counter>,
    parked: Gauge,
    no_sandbox: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabels {
    relay: &'static str,
}

impl ProxyMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            connections: Family::default(),
            protocols: Family::default(),
            rejected: Family::default(),
            requests: Family::default(),
            // 100 µs .. ~52 s
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 20))
            }),
            fallbacks: Family::default(),
            inherited: Family::default(),
            request_errors: Family::default(),
            upstream_errors: Family::default(),
            h2_errors: Family::default(),
            kafka_errors: Family::default(),
            kafka_records: Family::default(),
            splices: Family::default(),
            origins: Family::default(),
            parked: Gauge::default(),
            no_sandbox: Label(Arc::from("")),
        };
        registry.register(
            "connections",
            "Redirected connections accepted by the proxy, by service",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_by_protocol",
            "Redirected connections by how they were served: http1 (routed per request), \
             h2 (routed per stream), kafka (relayed frame by frame), opaque (spliced to \
             baseline), timeout (nothing sent in time: spliced)",
            metrics.protocols.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections to the proxy closed without forwarding, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "requests",
            "HTTP requests (HTTP/2: streams) routed, by service, destination \
             (baseline|sandbox), sandbox and protocol (http1|h2)",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request head to the end of its response, by protocol (http1|h2)",
            metrics.duration.clone(),
        );
        registry.register(
            "fallbacks",
            "Requests meant for a fork that went to baseline, by reason",
            metrics.fallbacks.clone(),
        );
        registry.register(
            "inherited_keys",
            "Requests from a fork pod with no routing key of their own, routed with their \
             sandbox's key (and forwarded carrying it), by sandbox",
            metrics.inherited.clone(),
        );
        registry.register(
            "request_errors",
            "Requests refused by the proxy (400, 408, 431), by reason",
            metrics.request_errors.clone(),
        );
        registry.register(
            "h2_connection_errors",
            "HTTP/2 client connections ended by an error, by the HTTP/2 error code sent or \
             received (enhance_your_calm: a flood such as rapid reset or CONTINUATION; \
             protocol_error, frame_size_error, ...; io: the connection failed)",
            metrics.h2_errors.clone(),
        );
        registry.register(
            "kafka_connection_errors",
            "Kafka connections the proxy closed because their bytes were not Kafka frames, \
             by reason (frame_too_large, frame_too_short, truncated, malformed_header; io: \
             the connection failed)",
            metrics.kafka_errors.clone(),
        );
        registry.register(
            "kafka_records",
            "Records of a sandbox's fork pods, by sandbox, topic and outcome: fetched \
             (delivered: they carry the sandbox's key; filtered: they do not), produced \
             without a key (keyed: given the sandbox's)",
            metrics.kafka_records.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failures to reach or read the upstream (502, 504 or a closed connection), by reason",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "splices",
            "Connections spliced to their destination (not routed by request), by where \
             their bytes are relayed: kernel (the sk_skb relay) or user (the proxy copies \
             them: the relay is off, or the kernel refused the sockets)",
            metrics.splices.clone(),
        );
        registry.register(
            "client_address",
            "Redirected connections by the source address their upstream connections carry: \
             client_namespace (the client pod's: made in its network namespace), node_client \
             (the client is the node or a hostNetwork pod: the node's, as without detour), \
             unnamed_namespace (the client's namespace is not named under /run/netns: the \
             node's), off (the node's: see detour status)",
            metrics.origins.clone(),
        );
        registry.register(
            "parked_connections",
            "Idle HTTP/1 keep-alive client connections parked now (idle longer than \
             --park-idle-after: waiting for their next request outside the proxy's tasks)",
            metrics.parked.clone(),
        );
        metrics
    }

    /// Connections parked now.
    pub fn set_parked(&self, parked: usize) {
        self.parked.set(i64::try_from(parked).unwrap_or(i64::MAX));
    }

    /// A connection's upstream origin resolved.
    pub fn origin(&self, resolved: super::origin::Resolved) {
        self.origins
            .get_or_create(&ReasonLabels {
                reason: resolved.label(),
            })
            .inc();
    }

    /// A connection spliced; `relay` is `kernel` or `user`.
    pub fn splice(&self, relay: &'static str) {
        self.splices.get_or_create(&RelayLabels { relay }).inc();
    }

    pub fn connection(&self, service: &Arc<str>) {
        self.connections
            .get_or_create(&ServiceLabels {
                service: Label(Arc::clone(service)),
            })
            .inc();
    }

    pub fn protocol(&self, protocol: &'static str) {
        self.protocols
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A request relayed; `protocol` is `http1` or `h2`.
    pub fn request(
        &self,
        service: &Arc<str>,
        sandbox: Option<&Arc<str>>,
        protocol: &'static str,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            service: Label(Arc::clone(service)),
            destination: if sandbox.is_some() {
                "sandbox"
            } else {
                "baseline"
            },
            sandbox: sandbox.map_or_else(|| self.no_sandbox.clone(), |s| Label(Arc::clone(s))),
            protocol,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&ProtocolLabels { protocol })
            .observe(elapsed.as_secs_f64());
    }

    /// A request from a fork pod that inherited `sandbox`'s key.
    pub fn inherited(&self, sandbox: &Arc<str>) {
        self.inherited
            .get_or_create(&SandboxLabels {
                sandbox: Label(Arc::clone(sandbox)),
            })
            .inc();
    }

    pub fn fallback(&self, reason: &'static str) {
        self.fallbacks.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A response the proxy wrote itself: a client error or an upstream one.
    pub fn proxy_error(&self, error: ProxyError) {
        let reason = error.metric_reason();
        if error.is_client_error() {
            self.request_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        } else {
            self.upstream_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// An HTTP/2 client connection that ended in an error.
    pub fn h2_error(&self, reason: Option<h2::Reason>) {
        let reason = reason.map_or("io", h2_reason_label);
        self.h2_errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A Kafka connection that ended in an error.
    pub fn kafka_error(&self, reason: &'static str) {
        self.kafka_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records of `topic` a fork pod of `sandbox` fetched (delivered, and
    /// filtered out) and produced (`keyed`: given the sandbox's key).
    pub fn kafka_records(&self, sandbox: &Arc<str>, topic: &str, counts: [u64; 3]) {
        let [delivered, filtered, keyed] = counts;
        for (outcome, count) in [
            ("delivered", delivered),
            ("filtered", filtered),
            ("keyed", keyed),
        ] {
            if count > 0 {
                let labels = KafkaRecordLabels {
                    sandbox: Label(Arc::clone(sandbox)),
                    topic: Label(Arc::from(topic)),
                    outcome,
                };
                self.kafka_records.get_or_create(&labels).inc_by(count);
            }
        }
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// An HTTP/2 error code as a label value.
fn h2_reason_label(reason: h2::Reason) -> &'static str {
    match reason {
        h2::Reason::NO_ERROR => "no_error",
        h2::Reason::PROTOCOL_ERROR => "protocol_error",
        h2::Reason::INTERNAL_ERROR => "internal_error",
        h2::Reason::FLOW_CONTROL_ERROR => "flow_control_error",
        h2::Reason::SETTINGS_TIMEOUT => "settings_timeout",
        h2::Reason::STREAM_CLOSED => "stream_closed",
        h2::Reason::FRAME_SIZE_ERROR => "frame_size_error",
        h2::Reason::REFUSED_STREAM => "refused_stream",
        h2::Reason::CANCEL => "cancel",
        h2::Reason::COMPRESSION_ERROR => "compression_error",
        h2::Reason::CONNECT_ERROR => "connect_error",
        h2::Reason::ENHANCE_YOUR_CALM => "enhance_your_calm",
        h2::Reason::INADEQUATE_SECURITY => "inadequate_security",
        h2::Reason::HTTP_1_1_REQUIRED => "http_1_1_required",
        _ => "other",
    }
}
