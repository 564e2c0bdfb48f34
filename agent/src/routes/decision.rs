//! The routing decision: where one request (an HTTP/1 request or an HTTP/2
//! stream) to a steered service goes, and why.
//!
//! This is the only place a request is decided. The proxy (every protocol),
//! `detour explain`, `detour trace`, the debug log and the metrics all take
//! the [`Decision`] this returns and its [`Reason`]; none re-derives why a
//! request went where it went, and each reason's words are written here once.
//!
//! A decision is two hash lookups (routing key, then service id) and, for a
//! fork, one atomic increment of its round-robin cursor. `explain` asks the
//! same question with [`Pick::Peek`], which leaves the cursor alone.

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};

use super::snapshot::{ForkTarget, RouteSnapshot};

/// Why a request goes where it goes.
///
/// The serialized names are the `reason` field of `detour flows`, `detour
/// trace` and `detour explain` (`-o json`); they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The request carries no routing key: baseline.
    #[serde(rename = "no-key")]
    NoKey,
    /// No sandbox or route group with the request's key forks the service:
    /// baseline.
    #[serde(rename = "no-route-for-key")]
    NoRouteForKey,
    /// A fork of the service has the key and a ready endpoint: the fork.
    #[serde(rename = "fork")]
    Fork,
    /// A fork of the service has the key but no ready endpoint for the
    /// destination port: baseline, counted as a fallback.
    #[serde(rename = "fork-no-ready-endpoints")]
    ForkNotReady,
    /// The request carries no routing key but comes from a fork pod: its
    /// sandbox's key routes it to a fork (and it is forwarded carrying it).
    #[serde(rename = "inherited-key")]
    Inherited,
}

impl Reason {
    /// The name in the admin API and logs (`no-key`, `fork`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoKey => "no-key",
            Self::NoRouteForKey => "no-route-for-key",
            Self::Fork => "fork",
            Self::ForkNotReady => "fork-no-ready-endpoints",
            Self::Inherited => "inherited-key",
        }
    }

    /// The `reason` label of `detour_fallbacks_total`, for a request that
    /// was meant for a fork and went to baseline.
    pub fn fallback(self) -> Option<&'static str> {
        match self {
            Self::ForkNotReady => Some("no_ready_endpoints"),
            Self::NoKey | Self::NoRouteForKey | Self::Fork | Self::Inherited => None,
        }
    }

    /// The route column of `detour trace`: the sandbox a request went to, or
    /// `baseline` with why in brackets when a key was there.
    pub fn route(self, sandbox: Option<&str>) -> String {
        match (self, sandbox) {
            (Self::Fork, Some(sandbox)) => sandbox.to_owned(),
            (Self::Inherited, Some(sandbox)) => format!("{sandbox} (inherited key)"),
            (Self::NoKey | Self::Fork | Self::Inherited, _) => "baseline".to_owned(),
            (Self::NoRouteForKey, _) => "baseline (no route)".to_owned(),
            (Self::ForkNotReady, _) => "baseline (fork not ready)".to_owned(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The original destination the client asked for; `reason` is
    /// [`Reason::NoKey`] or [`Reason::NoRouteForKey`].
    Baseline { reason: Reason },
    /// A fork endpoint of `sandbox`.
    Fork {
        sandbox: Arc<str>,
        endpoint: SocketAddr,
    },
    /// The original destination, because `sandbox`'s fork of the service has
    /// no ready endpoint (a fallback: counted, logged, visible in the CLI).
    ForkNotReady { sandbox: Arc<str> },
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Self::Baseline { reason } => *reason,
            Self::Fork { .. } => Reason::Fork,
            Self::ForkNotReady { .. } => Reason::ForkNotReady,
        }
    }

    /// The upstream address: the fork endpoint, or `original_dst`.
    pub fn endpoint(&self, original_dst: SocketAddr) -> SocketAddr {
        match self {
            Self::Fork { endpoint, .. } => *endpoint,
            Self::Baseline { .. } | Self::ForkNotReady { .. } => original_dst,
        }
    }

    /// The sandbox the request goes to (only for [`Decision::Fork`]).
    pub fn sandbox(&self) -> Option<&Arc<str>> {
        match self {
            Self::Fork { sandbox, .. } => Some(sandbox),
            Self::Baseline { .. } | Self::ForkNotReady { .. } => None,
        }
    }

    /// The sandbox whose fork matched the key, whether or not it was used.
    pub fn matched_sandbox(&self) -> Option<&Arc<str>> {
        match self {
            Self::Fork { sandbox, .. } | Self::ForkNotReady { sandbox } => Some(sandbox),
            Self::Baseline { .. } => None,
        }
    }
}

/// The route a decided request takes: the upstream endpoint, and the
/// sandbox whose fork serves it (`None`: baseline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: SocketAddr,
    pub sandbox: Option<Arc<str>>,
}

impl Decision {
    /// The route the request takes: to a fork endpoint, or to
    /// `original_dst`.
    pub fn into_route(self, original_dst: SocketAddr) -> Route {
        let endpoint = self.endpoint(original_dst);
        let sandbox = match self {
            Self::Fork { sandbox, .. } => Some(sandbox),
            Self::Baseline { .. } | Self::ForkNotReady { .. } => None,
        };
        Route { endpoint, sandbox }
    }
}

/// Whether deciding moves a fork's round-robin cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A real request: take the next endpoint.
    Advance,
    /// `explain`: say which endpoint the next request would get.
    Peek,
}

impl RouteSnapshot {
    /// Where a request to service `service_id`, sent to destination port
    /// `port`, carrying `key`, goes.
    pub fn decide(&self, service_id: u32, port: u16, key: Option<&str>) -> Decision {
        self.decide_with(service_id, port, key, Pick::Advance)
    }

    /// [`RouteSnapshot::decide`], with the cursor moved or only peeked.
    pub fn decide_with(
        &self,
        service_id: u32,
        port: u16,
        key: Option<&str>,
        pick: Pick,
    ) -> Decision {
        let Some(key) = key else {
            return Decision::Baseline {
                reason: Reason::NoKey,
            };
        };
        let Some(target) = self.fork_target(key, service_id) else {
            return Decision::Baseline {
                reason: Reason::NoRouteForKey,
            };
        };
        let endpoint = match pick {
            Pick::Advance => target.pick(port),
            Pick::Peek => target.peek(port).1,
        };
        match endpoint {
            Some(endpoint) => Decision::Fork {
                sandbox: Arc::clone(&target.sandbox),
                endpoint,
            },
            None => Decision::ForkNotReady {
                sandbox: Arc::clone(&target.sandbox),
            },
        }
    }

    /// The fork that requests to `service_id` carrying `key` are meant for.
    pub fn fork_target(&self, key: &str, service_id: u32) -> Option<&Arc<ForkTarget>> {
        self.routes
            .get(key)
            .and_then(|routes| routes.get(&service_id))
    }
}
