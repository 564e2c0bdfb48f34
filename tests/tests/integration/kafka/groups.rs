//! A fork consumer consumes as a group of its own, and only its sandbox's
//! records: a consumer in the sandbox's fork pod that uses the baseline's
//! group id is given `<group>.detour-<sandbox>`, so it reads the topic from
//! its own offsets and its commits never move the baseline group's; and it
//! receives only the records whose headers carry the sandbox's key, reading
//! past the others.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use detour_tests::require_root;

use super::Setup;

#[test]
fn a_fork_consumer_with_the_baselines_group_id_consumes_as_its_own_group() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let bootstrap = setup.broker.addr.to_string();
    let keyed = "baggage=detour-routing-key=feature-x";
    setup.client(&["produce", &bootstrap, "orders", "20", keyed]);
    // Baseline's group reads everything and commits.
    assert_eq!(setup.consume("orders", "billing", 20).len(), 20);
    // The fork, with the same group id: a group of its own, from the start.
    let forked = setup.consume_in(&setup.fork_pod, "orders", "billing", 20, 30);
    assert_eq!(
        forked.len(),
        20,
        "the fork's group starts from the beginning"
    );
    // Its commits are its own: baseline's group has nothing left to read,
    // and the fork's neither.
    assert!(
        setup
            .consume_in(&setup.cgroup, "orders", "billing", 1, 5)
            .is_empty()
    );
    assert!(
        setup
            .consume_in(&setup.fork_pod, "orders", "billing", 1, 5)
            .is_empty()
    );
}

#[test]
fn a_fork_consumer_receives_only_its_sandboxs_records() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let bootstrap = setup.broker.addr.to_string();
    let header = |key: &str| format!("baggage=detour-routing-key={key}");
    setup.client(&["produce", &bootstrap, "orders", "10", &header("feature-x")]);
    setup.client(&["produce", &bootstrap, "orders", "10", &header("feature-y")]);
    setup.client(&["produce", &bootstrap, "orders", "10"]);
    setup.client(&["produce", &bootstrap, "orders", "5", &header("feature-x")]);
    // Asked for more than there are: it gets the sandbox's 15, no more.
    let forked = setup.consume_in(&setup.fork_pod, "orders", "billing", 30, 10);
    let baggage: Vec<&str> = forked.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(
        baggage,
        vec!["detour-routing-key=feature-x"; 15],
        "{forked:?}"
    );
    assert_eq!(
        setup.agent.metric(
            r#"detour_kafka_records_total{sandbox="feature-x",topic="orders",outcome="filtered"}"#
        ),
        20
    );
    // It has read past what it did not see: nothing is left for it.
    assert!(
        setup
            .consume_in(&setup.fork_pod, "orders", "billing", 1, 5)
            .is_empty()
    );
    // A consumer outside the sandbox gets every record.
    assert_eq!(setup.consume("orders", "billing", 35).len(), 35);
}
