//! Kafka: a real broker (Apache Kafka in KRaft mode, from Maven Central's
//! jars) and a real client (confluent-kafka, librdkafka) through detour, on
//! a port declared `kafka`.

mod groups;
mod passthrough;

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
        self.client_in(&self.cgroup, args)
    }

    /// `kafka_client.py ARGS` from the client pod, as a process of `cgroup`.
    pub fn client_in(&self, cgroup: &Cgroup, args: &[&str]) -> String {
        let output = self.net.pod("client").kafka_client(cgroup, args);
        assert!(
            output.status.success(),
            "kafka_client.py {args:?} failed: {}",
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
        let bootstrap = self.broker.addr.to_string();
        let args = [
            "consume",
            &bootstrap,
            topic,
            group,
            &count.to_string(),
            &seconds.to_string(),
        ];
        let out = self.client_in(cgroup, &args);
        out.lines()
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
