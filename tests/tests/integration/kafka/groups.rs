//! A fork consumer consumes as a group of its own: a consumer in the
//! sandbox's fork pod that uses the baseline's group id is given
//! `<group>.detour-<sandbox>`, so it reads the topic from its own offsets
//! and its commits never move the baseline group's.
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
    setup.client(&["produce", &bootstrap, "orders", "20"]);
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
