//! A fork producer's records carry its sandbox's key: records a sandbox's
//! fork pod produces without a routing key reach the broker with the
//! sandbox's `baggage` member (a record with a key of its own keeps it),
//! from librdkafka and from the Java client (idempotent by default: the
//! re-encoded batches keep their sequence numbers, or the broker would
//! refuse them). So the next hop's fork consumer receives them.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use detour_tests::require_root;

use super::{Client, Setup};

#[test]
fn a_fork_producers_records_without_a_key_carry_its_sandboxs() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let bootstrap = setup.broker.addr.to_string();
    let own = "baggage=detour-routing-key=feature-y";
    for client in [Client::Librdkafka, Client::Java("classic")] {
        setup.run(
            client,
            &setup.fork_pod,
            &["produce", &bootstrap, "events", "3"],
        );
        setup.run(
            client,
            &setup.fork_pod,
            &["produce", &bootstrap, "events", "1", own],
        );
    }
    let seen = setup.consume("events", "audit", 8);
    let baggage: Vec<&str> = seen.iter().map(|(_, b)| b.as_str()).collect();
    let (x, y) = (
        "detour-routing-key=feature-x",
        "detour-routing-key=feature-y",
    );
    assert_eq!(baggage, [x, x, x, y, x, x, x, y]);
    // librdkafka's (Produce v7) name their topic; the Java client's
    // (Produce v13) its id.
    assert_eq!(
        setup.agent.metric(
            r#"detour_kafka_records_total{sandbox="feature-x",topic="events",outcome="keyed"}"#
        ),
        3
    );
    // The sandbox's fork consumer of the next hop receives them.
    let forked = setup.consume_in(&setup.fork_pod, "events", "audit", 6, 30);
    assert_eq!(forked.len(), 6);
}
