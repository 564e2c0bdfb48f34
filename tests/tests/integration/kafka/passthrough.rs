//! A port declared `kafka` is relayed frame by frame, one-to-one with the
//! broker the client dialled: a producer's records and their headers reach
//! a consumer group through detour unchanged; a frame that is not Kafka
//! (too large, or a request header that does not decode) closes that one
//! connection, counted, while other clients go on.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use detour_tests::require_root;

use super::Setup;

#[test]
fn records_and_their_headers_pass_through_unchanged() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let bootstrap = setup.broker.addr.to_string();
    let produced = setup.client(&[
        "produce",
        &bootstrap,
        "orders",
        "50",
        "baggage=detour-routing-key=feature-x",
    ]);
    assert_eq!(produced.trim(), "produced 50");
    let records = setup.consume("orders", "billing", 50);
    let expected: Vec<(String, String)> = (0..50)
        .map(|i| (i.to_string(), "detour-routing-key=feature-x".to_owned()))
        .collect();
    assert_eq!(records, expected);
    // Through the proxy, served as Kafka, with nothing refused.
    assert!(
        setup
            .agent
            .metric("detour_connections_total{service=\"default/kafka\"}")
            >= 2
    );
    assert!(
        setup
            .agent
            .metric("detour_connections_by_protocol_total{protocol=\"kafka\"}")
            >= 2
    );
    for reason in [
        "frame_too_large",
        "frame_too_short",
        "truncated",
        "malformed_header",
    ] {
        let sample = format!("detour_kafka_connection_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(setup.agent.metric(&sample), 0, "{sample}");
    }
}

#[test]
fn a_frame_that_is_not_kafka_closes_only_its_connection() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let addr = setup.broker.addr;
    let raw = |bytes: &[u8]| {
        let output = setup.net.pod("client").exec_in_with_input(
            &setup.cgroup,
            "python3",
            &[
                concat!(env!("CARGO_MANIFEST_DIR"), "/clients/raw.py"),
                &addr.ip().to_string(),
                &addr.port().to_string(),
                "5",
            ],
            bytes,
        );
        assert!(output.status.success(), "{output:?}");
        output.stdout
    };
    // A size over the broker's limit: closed with nothing sent back.
    assert_eq!(raw(&0x7fff_ffffu32.to_be_bytes()), b"");
    // A Metadata v12 request whose client id runs past the frame.
    let bad = [0, 0, 0, 12, 0, 3, 0, 12, 0, 0, 0, 1, 0x7f, 0x7f, b'c', 0];
    assert_eq!(raw(&bad), b"");
    assert_eq!(
        setup
            .agent
            .metric("detour_kafka_connection_errors_total{reason=\"frame_too_large\"}"),
        1
    );
    assert_eq!(
        setup
            .agent
            .metric("detour_kafka_connection_errors_total{reason=\"malformed_header\"}"),
        1
    );
    // Everyone else goes on.
    let bootstrap = addr.to_string();
    setup.client(&["produce", &bootstrap, "after", "3"]);
    assert_eq!(setup.consume("after", "g", 3).len(), 3);
}
