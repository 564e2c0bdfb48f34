//! Plain HTTP/2 (h2c) through the agent with curl as the client and nghttpd
//! as the upstream: per-request routing on `h2c` and `auto` ports, the
//! proxy's own errors on non-gRPC requests, routing keys from a query
//! parameter or a cookie in both protocols, and what `Upgrade: h2c` does.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::ops::Deref;

use detour_tests::{Agent, Forked, Servers, cmd::Proc, require_root, topology::TempDir};

/// nghttpd (h2c) in each pod.
const H2C_PORT: u16 = 8443;
/// The HTTP/1 echo server in each pod.
const HTTP_PORT: u16 = 8080;
/// Nothing listens here.
const DEAD_PORT: u16 = 8099;

/// `web` and its fork, each serving h2c (nghttpd) and HTTP/1 (echo), and
/// a client.
struct Setup {
    forked: Forked,
    _servers: Vec<(Proc, TempDir)>,
    _echo: Vec<Proc>,
}

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.forked
    }
}

impl Setup {
    fn new() -> Self {
        let forked = Forked::service("web", H2C_PORT)
            .servers(Servers::None)
            .build("dc");
        let pods = [forked.baseline(), forked.fork()];
        let servers = pods.map(|pod| pod.h2c_file_server(H2C_PORT)).into();
        let echo = pods.map(|pod| pod.echo_server(HTTP_PORT)).into();
        Self {
            forked,
            _servers: servers,
            _echo: echo,
        }
    }

    fn ip(&self, pod: &str) -> String {
        self.net.pod(pod).ip4.to_string()
    }

    /// `web` (h2c, declared `protocol`) and `web-http` (HTTP/1) steered,
    /// both forked by `feature-x`.
    fn routes(&self, protocol: &str, fork_h2c_port: u16) -> String {
        format!(
            "services:
  - name: web
    addresses: [{web}]
    ports: [{{port: {H2C_PORT}, protocol: {protocol}}}]
  - name: web-http
    addresses: [{web}]
    ports: [{{port: {HTTP_PORT}, protocol: http}}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/web
        endpoints: [\"{fork}:{fork_h2c_port}\"]
      - service: default/web-http
        endpoints: [\"{fork}:{HTTP_PORT}\"]
",
            web = self.ip("web"),
            fork = self.ip("web-fork"),
        )
    }

    fn agent(&self, protocol: &str, extra: &[&str]) -> Agent {
        self.agent_with(&self.routes(protocol, H2C_PORT), extra)
    }

    fn agent_with(&self, routes: &str, extra: &[&str]) -> Agent {
        extra
            .iter()
            .fold(
                Agent::builder(&self.net, &self.cgroup).routes(routes),
                |b, arg| b.arg(arg),
            )
            .spawn()
    }

    /// curl from the client pod (in the cgroup); stdout.
    fn curl(&self, args: &[&str]) -> String {
        let mut all = vec!["-sS", "-m", "10"];
        all.extend_from_slice(args);
        let output = self.net.pod("client").exec_in(&self.cgroup, "curl", &all);
        assert!(
            output.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn h2c_url(&self, path: &str) -> String {
        format!("http://{}:{H2C_PORT}{path}", self.ip("web"))
    }
}

const KEYED: &str = "baggage: detour-routing-key=feature-x";

#[test]
fn curl_prior_knowledge_requests_are_routed_by_their_key() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent("h2c", &[]);
    let url = setup.h2c_url("/who");
    // (curl 7.88 cannot send several prior-knowledge requests on one
    // connection; one connection carrying both keys is the gRPC tests' job.)
    assert_eq!(setup.curl(&["--http2-prior-knowledge", &url]), "web\n");
    assert_eq!(
        setup.curl(&["--http2-prior-knowledge", "-H", KEYED, &url]),
        "web-fork\n"
    );
    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"h2\"}"),
        2
    );
    assert_eq!(
        agent.metric(
            "detour_requests_total{service=\"default/web\",destination=\"sandbox\",sandbox=\"feature-x\",protocol=\"h2\"}"
        ),
        1
    );
}

#[test]
fn an_auto_port_that_opens_with_the_preface_is_routed_per_stream() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent("auto", &[]);
    let url = setup.h2c_url("/who");
    assert_eq!(setup.curl(&["--http2-prior-knowledge", &url]), "web\n");
    assert_eq!(
        setup.curl(&["--http2-prior-knowledge", "-H", KEYED, &url]),
        "web-fork\n"
    );
    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"h2\"}"),
        2,
        "detected as HTTP/2"
    );
}

#[test]
fn a_plain_http2_request_to_a_refusing_fork_gets_502_from_the_proxy() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent_with(&setup.routes("h2c", DEAD_PORT), &[]);
    let url = setup.h2c_url("/who");
    let head = setup.curl(&[
        "--http2-prior-knowledge",
        "-H",
        KEYED,
        "-o",
        "/dev/null",
        "-D",
        "-",
        &url,
    ]);
    assert!(head.starts_with("HTTP/2 502"), "{head}");
    assert!(head.contains("detour-error: upstream-connect"), "{head}");
    assert_eq!(
        setup.curl(&["--http2-prior-knowledge", &url]),
        "web\n",
        "unkeyed still served"
    );
}

#[test]
fn a_query_parameter_or_a_cookie_carries_the_key_in_both_protocols_when_enabled() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let h1 = format!("http://{}:{HTTP_PORT}/", setup.ip("web"));
    let served_by = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("X-Served-By: "))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    {
        let _off = setup.agent("h2c", &[]);
        assert_eq!(
            setup.curl(&[
                "--http2-prior-knowledge",
                &setup.h2c_url("/who?sandbox=feature-x")
            ]),
            "web\n",
            "off unless enabled"
        );
    }
    let _agent = setup.agent(
        "h2c",
        &[
            "--routing-query-param",
            "sandbox",
            "--routing-cookie",
            "sandbox",
        ],
    );
    for (args, expected) in [
        (vec![setup.h2c_url("/who?sandbox=feature-x")], "web-fork\n"),
        (vec![setup.h2c_url("/who?other=feature-x")], "web\n"),
        (
            vec![
                "-b".to_owned(),
                "sandbox=feature-x".to_owned(),
                setup.h2c_url("/who"),
            ],
            "web-fork\n",
        ),
    ] {
        let mut all = vec!["--http2-prior-knowledge"];
        all.extend(args.iter().map(String::as_str));
        assert_eq!(setup.curl(&all), expected, "{args:?}");
    }
    let keyed = setup.curl(&[
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("{h1}?sandbox=feature-x"),
    ]);
    assert_eq!(served_by(&keyed), "web-fork", "{keyed}");
    let cookie = setup.curl(&["-o", "/dev/null", "-D", "-", "-b", "sandbox=feature-x", &h1]);
    assert_eq!(served_by(&cookie), "web-fork", "{cookie}");
}

#[test]
fn an_upgrade_to_h2c_is_routed_by_its_first_request() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent("h2c", &[]);
    let url = format!("http://{}:{HTTP_PORT}/", setup.ip("web"));
    // curl asks for `Upgrade: h2c`; the echo server stays on HTTP/1.1.
    let head = setup.curl(&["--http2", "-H", KEYED, "-o", "/dev/null", "-D", "-", &url]);
    assert!(head.contains("X-Served-By: web-fork"), "{head}");
    let head = setup.curl(&["--http2", "-o", "/dev/null", "-D", "-", &url]);
    assert!(head.contains("X-Served-By: web\r\n"), "{head}");
}
