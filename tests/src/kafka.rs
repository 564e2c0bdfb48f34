//! Apache Kafka in a pod: a one-node broker in KRaft mode (broker and
//! controller), from the jars `cargo xtask setup` fetched from Maven Central
//! (`DETOUR_KAFKA`), run on the machine's Java in the pod's network
//! namespace, with its data in a directory of its own; stopped and removed
//! on drop. Its clients run from a pod as processes of a cgroup:
//! `tests/clients/kafka_client.py` (confluent-kafka, that is librdkafka) and
//! `tests/clients/KafkaClient.java` (Apache Kafka's own Java client, from
//! the same jars, run as a single-file program).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Cgroup, cmd::Proc, servers::TempDir, topology::Pod};

/// Names the directory holding the broker's `libs/`.
pub const KAFKA_ENV: &str = "DETOUR_KAFKA";
/// The librdkafka client script.
pub const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/kafka_client.py");
/// The Java client's source.
pub const JAVA_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/KafkaClient.java");
/// Any 16 bytes, base64url: each broker has its own data directory.
const CLUSTER_ID: &str = "ZGV0b3VyLXRlc3RzLWthZg";

/// A running broker; stopped (and its data removed) on drop.
#[derive(Debug)]
pub struct KafkaBroker {
    proc: Proc,
    /// Its `host:port`, as clients bootstrap from it and it advertises.
    pub addr: SocketAddr,
    _data: TempDir,
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        // SIGTERM: a controlled shutdown.
        self.proc.signal(libc::SIGTERM);
        let _ = self.proc.wait_timeout(Duration::from_secs(20));
    }
}

fn classpath() -> String {
    let dir = std::env::var_os(KAFKA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{KAFKA_ENV} is not set: run the tests with `cargo xtask test`, which fetches Kafka"
            )
        });
    format!("{}/libs/*", dir.display())
}

impl Pod {
    /// Starts a broker listening on `port` of the pod's IPv4 address (its
    /// controller on `port + 1`), and returns once it answers clients.
    pub fn kafka_broker(&self, port: u16) -> KafkaBroker {
        let data = TempDir::new(&format!("detour-{}-kafka-", self.name));
        let addr = SocketAddr::new(self.ip4.into(), port);
        let controller = SocketAddr::new(self.ip4.into(), port + 1);
        let config = data.0.join("server.properties");
        std::fs::write(
            &config,
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.bootstrap.servers={controller}\n\
                 listeners=PLAINTEXT://{addr},CONTROLLER://{controller}\n\
                 advertised.listeners=PLAINTEXT://{addr}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={logs}\n\
                 offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n\
                 transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\nnum.partitions=1\n",
                logs = data.0.join("logs").display(),
            ),
        )
        .expect("write server.properties");
        let format = Command::new("java")
            .args([
                "-cp",
                &classpath(),
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
            ])
            .args(["-t", CLUSTER_ID, "-c"])
            .arg(&config)
            .output()
            .expect("run the Kafka storage tool");
        assert!(
            format.status.success(),
            "formatting the broker's storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let log = std::fs::File::create(data.0.join("broker.log")).expect("broker log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.path()))
            .args(["--", "java", "-Xms256m", "-Xmx256m", "-XX:+UseSerialGC"])
            .args(["-cp", &classpath(), "kafka.Kafka"])
            .arg(&config)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the Kafka broker");
        let broker = KafkaBroker {
            proc: Proc::new(child),
            addr,
            _data: data,
        };
        // Ready once a producer's records are acknowledged.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = self.exec(
                "/usr/bin/python3",
                &[CLIENT, "produce", &addr.to_string(), "detour-ready", "1"],
            );
            if probe.status.success() {
                return broker;
            }
            assert!(
                Instant::now() < deadline,
                "the Kafka broker in {} did not start: {}",
                self.name,
                std::fs::read_to_string(broker._data.0.join("broker.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs `KafkaClient.java ARGS` (Kafka's Java client) in the pod as a
    /// process of `cgroup`.
    pub fn kafka_java_client(&self, cgroup: &Cgroup, args: &[&str]) -> std::process::Output {
        let classpath = classpath();
        let mut all = vec!["-XX:TieredStopAtLevel=1", "-cp", &classpath, JAVA_CLIENT];
        all.extend_from_slice(args);
        self.exec_in(cgroup, "java", &all)
    }

    /// Runs `kafka_client.py ARGS` in the pod as a process of `cgroup`.
    pub fn kafka_client(&self, cgroup: &Cgroup, args: &[&str]) -> std::process::Output {
        let mut all = vec![CLIENT];
        all.extend_from_slice(args);
        self.exec_in(cgroup, "/usr/bin/python3", &all)
    }
}
