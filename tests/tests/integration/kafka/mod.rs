//! Kafka: a real broker (Apache Kafka in KRaft mode, from Maven Central's
//! jars) and real clients (confluent-kafka, that is librdkafka; Kafka's Java
//! client) through detour, on a port declared `kafka`.

mod codecs;
mod groups;
mod java;
mod passthrough;
mod producers;

use detour_tests::{Agent, Cgroup, Topology, unique_name};

const PORT: u16 = 9092;

/// A broker steered as `kafka`, a client pod, and sandbox `feature-x`
/// whose fork pod is a cgroup of its own. Fields drop in order: the agent
/// and broker, then the cgroups, then the pods.
pub struct Setup {
    pub agent: Agent,
    pub broker: detour_tests::kafka::KafkaBroker,
    pub fork_pod: Cgroup,
    pub cgroup: Cgroup,
    pub net: Topology,
}

impl Setup {
    pub fn new() -> Self {
        let net = Topology::builder("kp").pod("client").pod("broker").build();
        let cgroup = Cgroup::new(&unique_name("detour-kp-"));
        let fork_pod = cgroup.child("fork-pod");
        let broker = net.pod("broker").kafka_broker(PORT);
        let routes = format!(
            "services:
  - name: kafka
    addresses: [{}]
    ports: [{{port: {PORT}, protocol: kafka}}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    podCgroups: [\"{fork_pod}\"]
",
            net.pod("broker").ip4,
            fork_pod = fork_pod.path().display(),
        );
        let agent = Agent::builder(&net, &cgroup).routes(&routes).spawn();
        Self {
            agent,
            broker,
            fork_pod,
            cgroup,
            net,
        }
    }

    /// `kafka_client.py ARGS` from the client pod, in the node's cgroup.
    pub fn client(&self, args: &[&str]) -> String {
        self.run(Client::Librdkafka, &self.cgroup, args)
    }

    /// `client`'s program with `args`, from the client pod, as a process of
    /// `cgroup`; its standard output.
    pub fn run(&self, client: Client, cgroup: &Cgroup, args: &[&str]) -> String {
        let pod = self.net.pod("client");
        let output = match client {
            Client::Librdkafka => pod.kafka_client(cgroup, args),
            Client::Java(_) => pod.kafka_java_client(cgroup, args),
        };
        assert!(
            output.status.success(),
            "{client:?} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The values of `count` records `group` consumes from `topic`, with
    /// each record's `baggage` header.
    pub fn consume(&self, topic: &str, group: &str, count: usize) -> Vec<(String, String)> {
        self.consume_in(&self.cgroup, topic, group, count, 30)
    }

    /// As [`Setup::consume`], as a process of `cgroup`, for at most
    /// `seconds`.
    pub fn consume_in(
        &self,
        cgroup: &Cgroup,
        topic: &str,
        group: &str,
        count: usize,
        seconds: u32,
    ) -> Vec<(String, String)> {
        self.consume_with(Client::Librdkafka, cgroup, (topic, group), count, seconds)
    }

    /// As [`Setup::consume_in`], with `client`, from `(topic, group)`.
    pub fn consume_with(
        &self,
        client: Client,
        cgroup: &Cgroup,
        (topic, group): (&str, &str),
        count: usize,
        seconds: u32,
    ) -> Vec<(String, String)> {
        let bootstrap = self.broker.addr.to_string();
        let (count, seconds) = (count.to_string(), seconds.to_string());
        let mut args = vec!["consume", &bootstrap, topic, group, &count, &seconds];
        if let Client::Java(protocol) = client {
            args.push(protocol);
        }
        self.run(client, cgroup, &args)
            .lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).expect("JSON record");
                (
                    record["value"].as_str().unwrap_or_default().to_owned(),
                    record["headers"]["baggage"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }
}

/// A Kafka client of the tests.
#[derive(Debug, Clone, Copy)]
pub enum Client {
    /// confluent-kafka (librdkafka 2.0): the classic group protocol.
    Librdkafka,
    /// Kafka's Java client, with this `group.protocol` (`classic`, or
    /// `consumer`: KIP-848).
    Java(&'static str),
}
