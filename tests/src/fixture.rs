//! The shape most tests need, in one fixture: a service with its baseline,
//! its fork and a client, configured fluently.
//!
//! ```ignore
//! let forked = Forked::service("reviews", 8080)
//!     .protocol("http")
//!     .servers(Servers::LoggedEcho)
//!     .pod("ratings")
//!     .build("dx");
//! let agent = forked.agent().arg("--head-timeout").arg("1s").spawn();
//! forked.client().exec_in(&forked.cgroup, "curl", &[...]);
//! ```
//!
//! It makes a topology of pods `client`, `SERVICE` (the baseline) and
//! `SERVICE-fork`, plus any others asked for; the attached child cgroup; and
//! the same kind of server on the service's port in the baseline and the
//! fork. [`Forked::routes`] steers the service and has one sandbox,
//! [`SANDBOX`] (its routing key the same), fork it to `SERVICE-fork`;
//! [`Forked::agent`] is an agent builder with those routes. Each piece is
//! dropped (servers stopped, namespaces and cgroup removed) with it.

use crate::{
    agent::{Agent, AgentBuilder},
    cgroup::Cgroup,
    cmd::Proc,
    topology::{Pod, RequestLog, Topology},
    unique_name,
};

/// The sandbox, and its routing key, of the fixture's routes.
pub const SANDBOX: &str = "feature-x";

/// The servers run in the baseline and the fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Servers {
    /// HTTP/1.1, answering with its pod's name and the request.
    Echo,
    /// As `Echo`, each request logged.
    LoggedEcho,
    /// gRPC (grpcio), each call logged.
    Grpc,
    /// Answers then hangs or resets, on demand (`tests/servers/`).
    Faulty,
    /// HTTP/2 (h2c), answering with what it received, field by field.
    H2Inspect,
    /// None: the test starts its own.
    None,
}

/// How the fixture is to be made.
#[derive(Debug, Clone)]
pub struct ForkedBuilder {
    service: String,
    port: u16,
    protocol: String,
    servers: Servers,
    pods: Vec<String>,
    sandboxes: Vec<(String, String)>,
}

/// A forked service with its baseline, fork and client.
pub struct Forked {
    pub net: Topology,
    /// The attached child cgroup the client runs in.
    pub cgroup: Cgroup,
    pub service: String,
    pub port: u16,
    protocol: String,
    /// More sandboxes forking the service: (name and key, endpoint).
    sandboxes: Vec<(String, String)>,
    /// The requests each server received (`LoggedEcho`, `Grpc`).
    baseline_log: Option<RequestLog>,
    fork_log: Option<RequestLog>,
    _servers: Vec<Proc>,
}

impl Forked {
    /// A fixture for service `name` on `port`, declared `protocol: http`
    /// and served by echo servers unless told otherwise.
    pub fn service(name: &str, port: u16) -> ForkedBuilder {
        ForkedBuilder {
            service: name.to_owned(),
            port,
            protocol: "http".to_owned(),
            servers: Servers::Echo,
            pods: Vec::new(),
            sandboxes: Vec::new(),
        }
    }

    pub fn client(&self) -> &Pod {
        self.net.pod("client")
    }

    pub fn baseline(&self) -> &Pod {
        self.net.pod(&self.service)
    }

    pub fn fork(&self) -> &Pod {
        self.net.pod(&format!("{}-fork", self.service))
    }

    /// What the baseline's server received (servers that log).
    pub fn baseline_log(&self) -> &RequestLog {
        self.baseline_log.as_ref().expect(
            "the baseline's server keeps no log: build with `Servers::LoggedEcho` or `Grpc`",
        )
    }

    /// What the fork's server received (servers that log).
    pub fn fork_log(&self) -> &RequestLog {
        self.fork_log
            .as_ref()
            .expect("the fork's server keeps no log: build with `Servers::LoggedEcho` or `Grpc`")
    }

    /// The service steered on its port, [`SANDBOX`] forking it to the fork
    /// pod, and any sandboxes the builder added.
    pub fn routes(&self) -> String {
        let mut routes = format!(
            "services:\n  - name: {service}\n    addresses: [{base}]\n    \
             ports: [{{port: {port}, protocol: {protocol}}}]\nsandboxes:\n",
            service = self.service,
            base = self.baseline().ip4,
            port = self.port,
            protocol = self.protocol,
        );
        let fork = format!("{}:{}", self.fork().ip4, self.port);
        let first = (SANDBOX.to_owned(), fork);
        for (name, endpoint) in std::iter::once(&first).chain(&self.sandboxes) {
            routes.push_str(&format!(
                "  - name: {name}\n    routingKey: {name}\n    forks:\n      \
                 - service: default/{service}\n        endpoints: [\"{endpoint}\"]\n",
                service = self.service,
            ));
        }
        routes
    }

    /// An agent builder for the fixture's topology, cgroup and routes.
    pub fn agent(&self) -> AgentBuilder<'_> {
        Agent::builder(&self.net, &self.cgroup).routes(&self.routes())
    }
}

impl ForkedBuilder {
    /// The port's declared protocol (`http`, `h2c`, `tcp`, `auto`).
    pub fn protocol(mut self, protocol: &str) -> Self {
        protocol.clone_into(&mut self.protocol);
        self
    }

    pub fn servers(mut self, servers: Servers) -> Self {
        self.servers = servers;
        self
    }

    /// One more sandbox, `name` (its routing key the same), forking the
    /// service to `endpoint` (`IP:PORT`).
    pub fn sandbox(mut self, name: &str, endpoint: &str) -> Self {
        self.sandboxes.push((name.to_owned(), endpoint.to_owned()));
        self
    }

    /// One more pod in the topology, for the test's own use.
    pub fn pod(mut self, name: &str) -> Self {
        self.pods.push(name.to_owned());
        self
    }

    /// Makes it: `prefix` names the topology's namespaces and the cgroup.
    pub fn build(self, prefix: &str) -> Forked {
        let fork = format!("{}-fork", self.service);
        let mut topology = Topology::builder(prefix)
            .pod("client")
            .pod(&self.service)
            .pod(&fork);
        for pod in &self.pods {
            topology = topology.pod(pod);
        }
        let net = topology.build();
        let (mut servers, mut logs) = (Vec::new(), Vec::new());
        for pod in [&self.service, &fork] {
            let pod = net.pod(pod);
            match self.servers {
                Servers::Echo => servers.push(pod.echo_server(self.port)),
                Servers::LoggedEcho => {
                    let (server, log) = pod.logged_echo_server(self.port);
                    servers.push(server);
                    logs.push(log);
                }
                Servers::Grpc => {
                    let (server, log) = pod.grpc_server(self.port);
                    servers.push(server);
                    logs.push(log);
                }
                Servers::Faulty => servers.push(pod.faulty_server(self.port)),
                Servers::H2Inspect => servers.push(pod.h2_inspect_server(self.port)),
                Servers::None => {}
            }
        }
        let mut logs = logs.into_iter();
        Forked {
            cgroup: Cgroup::new(&unique_name(&format!("detour-{prefix}-"))),
            net,
            service: self.service,
            port: self.port,
            protocol: self.protocol,
            sandboxes: self.sandboxes,
            baseline_log: logs.next(),
            fork_log: logs.next(),
            _servers: servers,
        }
    }
}
