//! Micro-benchmarks of the agent's hot pure functions: what every request
//! pays before its bytes move. A change to one of them is measured here in
//! seconds (`cargo xtask bench micro`), not in a namespace run.
//!
//! - head parsing: an HTTP/1.1 request head, as a browser and as a traced
//!   gRPC-gateway client send it (`http::head::parse_request`);
//! - routing-key extraction from its fields: a key in `baggage`, a key in
//!   a long `baggage` among trace headers, and no key (`RoutingKeys`);
//! - the decision: a keyed request to a forked service, an unkeyed one, and
//!   a key nobody routes, in a table of 10,000 services and 1,000 sandboxes
//!   (`RouteSnapshot::decide`).

use std::{fmt::Write as _, hint::black_box};

use detour::{
    http::{
        head::{self, FieldLines},
        routing_key::RoutingKeys,
    },
    routes::{RouteInput, RouteSnapshot, RoutesFile, ServiceIds},
};

fn main() {
    divan::main();
}

const SHORT: &[u8] = b"GET /reviews/1 HTTP/1.1\r\nHost: reviews:8080\r\n\
baggage: detour-routing-key=feature-x\r\nAccept: */*\r\n\r\n";

const TRACED: &[u8] = b"POST /api.v1.Reviews/Get HTTP/1.1\r\nHost: reviews.default.svc:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n\
Accept: application/json\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Content-Type: application/json\r\nContent-Length: 17\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
tracestate: vendor1=opaque1,vendor2=opaque2\r\n\
baggage: userId=alice,serverNode=DF%2028,isProduction=false,tenant=acme,detour-routing-key=feature-x\r\n\
Cookie: session=0123456789abcdef; theme=dark\r\n\r\n";

const UNKEYED: &[u8] = b"GET /reviews/1 HTTP/1.1\r\nHost: reviews:8080\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nAccept: */*\r\n\r\n";

/// A request by name: `short`, `traced` or `unkeyed`.
fn request(name: &str) -> &'static [u8] {
    match name {
        "short" => SHORT,
        "traced" => TRACED,
        _ => UNKEYED,
    }
}

#[divan::bench(args = ["short", "traced"])]
fn parse_request_head(bencher: divan::Bencher, name: &str) {
    let bytes = request(name);
    bencher.bench_local(|| {
        let mut lines = FieldLines::default();
        let parsed = head::parse_request(black_box(bytes), &mut lines)
            .expect("valid")
            .expect("complete");
        parsed.head.len
    });
}

/// `short`: the key alone in `baggage`; `traced`: in a long `baggage`
/// among trace headers; `unkeyed`: no key.
#[divan::bench(args = ["short", "traced", "unkeyed"])]
fn extract_routing_key(bencher: divan::Bencher, name: &str) {
    let keys = RoutingKeys::default();
    let mut lines = FieldLines::default();
    let parsed = head::parse_request(request(name), &mut lines)
        .expect("valid")
        .expect("complete");
    let fields: Vec<(&[u8], &[u8])> = parsed.fields().collect();
    bencher.bench_local(|| keys.extract(black_box(&fields).iter().copied()));
}

/// A snapshot of `services` services, each with one address, and
/// `sandboxes` sandboxes forking ten services each.
fn snapshot(services: usize, sandboxes: usize) -> RouteSnapshot {
    let mut yaml = String::from("services:\n");
    for s in 0..services {
        let _ = writeln!(
            yaml,
            "  - name: svc-{s}\n    namespace: default\n    addresses: [10.{}.{}.{}]\n    ports:\n      - port: 8080\n        protocol: http",
            96 + s / 65536,
            (s / 256) % 256,
            s % 256
        );
    }
    yaml.push_str("sandboxes:\n");
    for b in 0..sandboxes {
        let _ = writeln!(
            yaml,
            "  - name: sb-{b}\n    routingKey: key-{b}\n    forks:"
        );
        for f in 0..10 {
            let _ = writeln!(
                yaml,
                "      - service: default/svc-{}\n        endpoints: [\"10.200.{}.{}:8080\"]",
                (b * 10 + f) % services,
                b % 256,
                f
            );
        }
    }
    let file = RoutesFile::parse(&yaml).expect("generated routes parse");
    RouteSnapshot::build(&RouteInput::from(&file), &mut ServiceIds::default())
}

#[divan::bench(args = ["forked", "unkeyed", "unrouted key"])]
fn decide(bencher: divan::Bencher, case: &str) {
    let snapshot = snapshot(10_000, 1_000);
    let service = snapshot
        .service_named("default/svc-4210")
        .expect("service")
        .id;
    let key = match case {
        "forked" => Some("key-421"),
        "unkeyed" => None,
        _ => Some("key-nobody-routes"),
    };
    bencher.bench_local(|| snapshot.decide(black_box(service), 8080, black_box(key)));
}
