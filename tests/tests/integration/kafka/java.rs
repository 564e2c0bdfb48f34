//! Kafka's Java client (kafka-clients 4.1, the broker's own) through detour,
//! with the classic group protocol and with KIP-848's (`group.protocol=
//! consumer`, whose ConsumerGroupHeartbeat carries the group): its producer's
//! records keep their headers; a fork consumer with the baseline's group id
//! consumes as a group of its own and receives only its sandbox's records;
//! a consumer outside the sandbox receives every record.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use detour_tests::require_root;

use super::{Client, Setup};

#[test]
fn the_java_client_consumes_as_a_fork_with_either_group_protocol() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let bootstrap = setup.broker.addr.to_string();
    let java = Client::Java("classic");
    let header = "baggage=detour-routing-key=feature-x";
    setup.run(
        java,
        &setup.cgroup,
        &["produce", &bootstrap, "orders", "6", header],
    );
    setup.run(java, &setup.cgroup, &["produce", &bootstrap, "orders", "4"]);
    for protocol in ["classic", "consumer"] {
        let client = Client::Java(protocol);
        let group = format!("billing-{protocol}");
        let everyone = setup.consume_with(client, &setup.cgroup, ("orders", &group), 10, 30);
        assert_eq!(
            everyone.len(),
            10,
            "{protocol}: outside the sandbox, every record"
        );
        let forked = setup.consume_with(client, &setup.fork_pod, ("orders", &group), 10, 8);
        let baggage: Vec<&str> = forked.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(
            baggage,
            vec!["detour-routing-key=feature-x"; 6],
            "{protocol}: the fork's own group, from the start, with only its records"
        );
    }
}
