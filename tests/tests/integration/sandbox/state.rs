//! Forked state: a sandbox forks a PostgreSQL database and a Redis cache
//! (real servers, Debian's packages). A client in the sandbox's fork pod
//! (a cgroup named in `podCgroups`) that connects to the baseline's address
//! is served by the fork, over IPv4 and IPv6; the same client outside the
//! fork pod reaches baseline, whose data the fork's writes never touch.
//! The sandbox gone, the pod's new connects go to baseline. A fork with no
//! ready endpoint is refused, never sent to baseline; and the fork pod keeps
//! its own database while no agent runs (the fork programs' links are
//! pinned), both on a connection it held across the agent's kill -9 and on
//! new ones, until a new agent starts without the sandbox. `detour status`
//! lists the fork pod; `detour explain --from` it says where it connects.
//! The fork's own pod (`forks[].podCgroups`) reaches the baseline it seeds
//! from.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{Agent, Cgroup, Forked, Postgres, Servers, cmd::Proc, require_root};

const PG: u16 = 5432;
const REDIS: u16 = 6379;

/// Baseline `db` and its fork `db-fork`, each running PostgreSQL (a table
/// `owner` naming whose data it is) and Redis (key `owner` likewise); the
/// client pod, and a fork pod cgroup inside the agent's. Fields drop in
/// order: servers, then the fork pod's cgroup, then the pods and theirs.
struct Setup {
    _redis: [Proc; 2],
    _postgres: [Postgres; 2],
    fork_pod: Cgroup,
    forked: Forked,
}

impl Setup {
    fn new() -> Self {
        let forked = Forked::service("db", PG).servers(Servers::None).build("sb");
        let fork_pod = forked.cgroup.child("fork-pod");
        let seed = |owner: &str| {
            format!("CREATE TABLE owner (name text); INSERT INTO owner VALUES ('{owner}');")
        };
        let postgres = [
            forked.baseline().postgres(PG, &seed("baseline")),
            forked.fork().postgres(PG, &seed("fork")),
        ];
        let redis = [
            forked
                .baseline()
                .redis(REDIS, &[&["SET", "owner", "baseline"]]),
            forked.fork().redis(REDIS, &[&["SET", "owner", "fork"]]),
        ];
        Self {
            fork_pod,
            _postgres: postgres,
            _redis: redis,
            forked,
        }
    }

    /// Routes with the database steered and, when `fork` is given, sandbox
    /// `feature-x` forking it to those endpoints for the fork pod.
    fn routes(&self, fork: Option<&[String]>) -> String {
        self.routes_with(fork, None)
    }

    /// [`Self::routes`], with `own_pod` named as a pod of the `db` fork
    /// itself.
    fn routes_with(&self, fork: Option<&[String]>, own_pod: Option<&Cgroup>) -> String {
        let db = self.forked.baseline();
        let mut routes = format!(
            "services:
  - name: db
    addresses: [{b4}, \"{b6}\"]
    ports: [{{port: {PG}, protocol: tcp}}, {{port: {REDIS}, protocol: tcp}}]
",
            b4 = db.ip4,
            b6 = db.ip6,
        );
        if let Some(endpoints) = fork {
            routes.push_str(&format!(
                "sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/db
        endpoints: [{endpoints}]
        podCgroups: [{own}]
    podCgroups: [\"{cgroup}\"]
",
                endpoints = endpoints
                    .iter()
                    .map(|e| format!("\"{e}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                own = own_pod
                    .map(|own| format!("\"{}\"", own.path().display()))
                    .unwrap_or_default(),
                cgroup = self.fork_pod.path().display(),
            ));
        }
        routes
    }

    /// The fork's endpoints on both ports.
    fn fork_endpoints(&self) -> Vec<String> {
        let fork = self.forked.fork().ip4;
        vec![format!("{fork}:{PG}"), format!("{fork}:{REDIS}")]
    }

    fn agent(&self, fork: Option<&[String]>) -> Agent {
        self.forked.agent().routes(&self.routes(fork)).spawn()
    }

    /// Whose PostgreSQL a client in `cgroup` reaches at the baseline's
    /// IPv4 address.
    fn postgres_owner(&self, cgroup: &Cgroup) -> Result<String, String> {
        let host = self.forked.baseline().ip4.to_string();
        self.forked.client().psql_in(
            cgroup,
            &host,
            PG,
            "SELECT string_agg(name, ',' ORDER BY name) FROM owner",
        )
    }

    /// Whose Redis a client in `cgroup` reaches at the baseline's `host`.
    fn redis_owner(&self, cgroup: &Cgroup, host: &str) -> String {
        self.forked
            .client()
            .redis_in(cgroup, host, REDIS, &["GET", "owner"])
    }

    /// Waits (up to 10 s) until the fork pod's PostgreSQL client reaches
    /// `owner` (the agent applies routes-file changes asynchronously).
    fn wait_fork_pod_reaches(&self, owner: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reached = self.postgres_owner(&self.fork_pod);
            if reached.as_deref() == Ok(owner) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the fork pod still reaches {reached:?}, not {owner}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_fork_pod_is_served_by_its_sandboxs_database_and_cache_and_baseline_is_untouched() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let endpoints = setup.fork_endpoints();
    let agent = setup.agent(Some(&endpoints));
    let (fork_pod, other) = (&setup.fork_pod, &setup.forked.cgroup);
    let db = setup.forked.baseline();

    assert_eq!(setup.postgres_owner(fork_pod).as_deref(), Ok("fork"));
    assert_eq!(setup.postgres_owner(other).as_deref(), Ok("baseline"));
    // `detour status` lists the fork pod, its sandbox and its forks.
    let status = agent.cli_json(&["status"]);
    assert_eq!(
        status["fork_pods"],
        serde_json::json!([{
            "sandbox": "feature-x",
            "pod": fork_pod.path().display().to_string(),
            "inherits_key": true,
            "keyless_forks": 4,
        }]),
        "both ports on both addresses"
    );
    // `detour explain --from` the fork pod: decided at connect, to the fork.
    let pod = fork_pod.path().display().to_string();
    let explain = agent.cli_json(&[
        "explain",
        "--service",
        "default/db",
        "--port",
        "5432",
        "--from",
        &pod,
    ]);
    let fork = format!("{}:{PG}", setup.forked.fork().ip4);
    assert_eq!(
        (&explain["destination"], &explain["endpoint"]),
        (&serde_json::json!("sandbox"), &serde_json::json!(fork)),
        "{explain}"
    );
    assert_eq!(setup.redis_owner(fork_pod, &db.ip4.to_string()), "fork");
    assert_eq!(setup.redis_owner(fork_pod, &db.ip6.to_string()), "fork");
    // Three connects redirected so far: PostgreSQL once, Redis twice.
    assert_eq!(
        agent.metric(r#"detour_fork_connects_total{sandbox="feature-x",outcome="redirected"}"#),
        3
    );
    assert_eq!(setup.redis_owner(other, &db.ip4.to_string()), "baseline");
    assert_eq!(setup.redis_owner(other, &db.ip6.to_string()), "baseline");

    // The fork's writes land in the fork; baseline's data is unchanged.
    let client = setup.forked.client();
    let host = db.ip4.to_string();
    client
        .psql_in(
            fork_pod,
            &host,
            PG,
            "INSERT INTO owner VALUES ('written-by-fork')",
        )
        .expect("the fork pod writes");
    assert_eq!(
        client.redis_in(fork_pod, &host, REDIS, &["SET", "owner", "written-by-fork"]),
        "OK"
    );
    assert_eq!(
        setup.postgres_owner(fork_pod).as_deref(),
        Ok("fork,written-by-fork")
    );
    assert_eq!(setup.postgres_owner(other).as_deref(), Ok("baseline"));
    assert_eq!(setup.redis_owner(other, &host), "baseline");

    // The sandbox deleted: the pod's new connects go to baseline.
    agent.write_routes(&setup.routes(None));
    setup.wait_fork_pod_reaches("baseline");
    assert_eq!(setup.redis_owner(fork_pod, &host), "baseline");
}

#[test]
fn a_forks_own_pod_reaches_the_baseline_it_seeds_from() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let own_pod = setup.forked.cgroup.child("db-fork-pod");
    let endpoints = setup.fork_endpoints();
    let agent = setup
        .forked
        .agent()
        .routes(&setup.routes_with(Some(&endpoints), Some(&own_pod)))
        .spawn();
    // The `db` fork's own pod (its init container, say) copies from the
    // baseline; the sandbox's other fork pods still reach the fork.
    assert_eq!(setup.postgres_owner(&own_pod).as_deref(), Ok("baseline"));
    let db = setup.forked.baseline().ip4.to_string();
    assert_eq!(setup.redis_owner(&own_pod, &db), "baseline");
    assert_eq!(setup.postgres_owner(&setup.fork_pod).as_deref(), Ok("fork"));
    let explain = agent.cli_json(&[
        "explain",
        "--service",
        "default/db",
        "--port",
        "5432",
        "--from",
        &own_pod.path().display().to_string(),
    ]);
    assert_eq!(explain["destination"], "baseline", "{explain}");
    assert!(
        explain["steps"].to_string().contains("seed itself"),
        "explain says why: {explain}"
    );
}

#[test]
fn a_forked_database_with_no_ready_fork_refuses_the_fork_pods_connects() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(Some(&[]));
    let refused = setup
        .postgres_owner(&setup.fork_pod)
        .expect_err("a fork pod's connect to a fork with no endpoint must fail");
    assert!(
        refused.contains("Operation not permitted"),
        "refused with EPERM, said: {refused}"
    );
    assert!(
        agent.metric(r#"detour_fork_connects_total{sandbox="feature-x",outcome="refused"}"#) >= 1,
        "counted as refused"
    );
    assert_eq!(
        setup.postgres_owner(&setup.forked.cgroup).as_deref(),
        Ok("baseline")
    );
    let status = agent.cli(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("no ready") && status.contains("refused"),
        "`detour status` says why: {status}"
    );
}

#[test]
fn a_fork_pod_keeps_its_database_while_no_agent_runs() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let endpoints = setup.fork_endpoints();
    let mut agent = setup.agent(Some(&endpoints));
    assert_eq!(setup.postgres_owner(&setup.fork_pod).as_deref(), Ok("fork"));
    // A connection the fork holds to its cache across the agent's death.
    let db = setup.forked.baseline().ip4.to_string();
    let mut held = HeldRedis::open(&setup, &db);
    assert_eq!(held.get_owner(), "fork");

    // The node's programs go with the agent (fail-open); the fork's stay.
    agent.kill9();
    assert_eq!(
        held.get_owner(),
        "fork",
        "the held connection is the fork's still"
    );
    assert_eq!(setup.postgres_owner(&setup.fork_pod).as_deref(), Ok("fork"));
    assert_eq!(
        setup.postgres_owner(&setup.forked.cgroup).as_deref(),
        Ok("baseline")
    );

    // A new agent with the sandbox attaches its own programs and removes
    // the earlier run's; then, without the sandbox, the pod reaches
    // baseline (nothing of the earlier run is left rewriting).
    let next = setup
        .forked
        .agent()
        .routes(&setup.routes(Some(&endpoints)))
        .sharing_pin_dir(&agent)
        .spawn();
    assert_eq!(setup.postgres_owner(&setup.fork_pod).as_deref(), Ok("fork"));
    next.write_routes(&setup.routes(None));
    setup.wait_fork_pod_reaches("baseline");
}

/// A Redis connection a fork pod's process holds open, asking `GET owner`
/// on it on demand (a plain RESP client: `redis-cli` reads all its input
/// before it answers).
struct HeldRedis {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

const HOLD_REDIS: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
f = s.makefile("rb")
for _ in sys.stdin:
    s.sendall(b"*2\r\n$3\r\nGET\r\n$5\r\nowner\r\n")
    f.readline()
    print(f.readline().decode().strip(), flush=True)
"#;

impl HeldRedis {
    fn open(setup: &Setup, host: &str) -> Self {
        let mut child = setup.forked.client().spawn_driven_in(
            &setup.fork_pod,
            "/usr/bin/python3",
            &["-c", HOLD_REDIS, host, &REDIS.to_string()],
        );
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn get_owner(&mut self) -> String {
        use std::io::{BufRead, Write};
        writeln!(self.stdin).expect("ask");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("answer");
        line.trim().to_owned()
    }
}

impl Drop for HeldRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
