//! Batches in every codec, and transactions: a fork consumer receives only
//! its sandbox's records from batches a real producer compressed with
//! gzip, snappy, lz4 and zstd (filtered, re-encoded in their codec), and,
//! reading committed records only, those of a committed transaction and
//! none of an aborted one (the markers and the aborted transactions' list
//! pass untouched).
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use detour_tests::require_root;

use super::{Client, Setup};

const KEYED: &str = "baggage=detour-routing-key=feature-x";

#[test]
fn a_fork_consumer_reads_its_records_from_batches_in_every_codec() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let bootstrap = setup.broker.addr.to_string();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let option = format!("--compression={codec}");
        let topic = format!("orders-{codec}");
        setup.client(&["produce", &bootstrap, &topic, "3", &option, KEYED]);
        setup.client(&["produce", &bootstrap, &topic, "3", &option]);
        let forked = setup.consume_in(&setup.fork_pod, &topic, "g", 6, 8);
        let values: Vec<&str> = forked.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(values, ["0", "1", "2"], "{codec}");
        assert_eq!(
            setup.consume(&topic, "g", 6).len(),
            6,
            "{codec}: outside, all"
        );
    }
}

#[test]
fn a_fork_consumer_reading_committed_gets_committed_transactions_only() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let bootstrap = setup.broker.addr.to_string();
    let produce = |count: &str, transaction: &str| {
        let option = format!("--transaction={transaction}");
        setup.client(&["produce", &bootstrap, "ledger", count, &option, KEYED]);
        setup.client(&["produce", &bootstrap, "ledger", count, &option]);
    };
    produce("2", "commit");
    produce("3", "abort");
    produce("4", "commit");
    let read_committed = |cgroup, count: &str| {
        setup.run(
            Client::Librdkafka,
            cgroup,
            &[
                "consume",
                &bootstrap,
                "ledger",
                "g",
                count,
                "8",
                "read_committed",
            ],
        )
    };
    let forked = read_committed(&setup.fork_pod, "20");
    assert_eq!(
        forked.lines().count(),
        6,
        "2 + 4 committed and keyed: {forked}"
    );
    assert!(forked.lines().all(|l| l.contains("feature-x")), "{forked}");
    let everyone = read_committed(&setup.cgroup, "20");
    assert_eq!(
        everyone.lines().count(),
        12,
        "every committed record: {everyone}"
    );
}
