//! What crosses the HTTP/2 proxy is what its peers sent: `h2raw.py request`
//! from the attached cgroup sends a request with repeated and interleaved
//! fields, credentials, an empty value, a body bigger than one flow-control
//! window and trailers to `tests/servers/h2_inspect.py`, which answers with
//! the request field by field as it arrived (each field's HPACK never-indexed
//! flag included) and what it sent back, so both directions are compared.
//!
//! HTTP/2 lets an intermediary regroup fields of different names (RFC 9110
//! §5.3), and detour does (its `HeaderMap` groups a name's fields where the
//! name first appeared): what is asserted is the same fields, in the same
//! order within each name, pseudo-headers unchanged, and nothing added. The
//! 1xx responses an upstream sends are part of its response and are
//! asserted too. RFC 7541 §6.2.3 asks an intermediary to keep a
//! never-indexed field never-indexed; h2 does not report the flag, so that
//! test is ignored (a known limitation) and credentials are checked instead.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{collections::BTreeMap, ops::Deref};

use detour_tests::{Agent, Forked, Servers, require_root};
use serde_json::Value;

const PORT: u16 = 8443;
const H2RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/h2raw.py");
const BODY_BYTES: usize = 70_000;
const AUTHORITY: &str = "web.example:8443";
const PATH: &str = "/inspect/a%20b;v=1?q=1&q=2&r=%2F";
/// The request's regular fields, in the order sent: names repeat and
/// interleave; `authorization` and `cookie` go as ordinary (indexable)
/// literals (`--index-sensitive`).
const FIELDS: &[(&str, &str)] = &[
    ("x-multi", "one"),
    ("accept", "application/json"),
    ("x-multi", "two"),
    ("authorization", "Bearer not-for-any-index"),
    ("cookie", "session=abc"),
    ("user-agent", "h2raw-faithful/1"),
    ("cookie", "theme=dark-and-long-enough-to-index"),
    ("x-multi", "three"),
    ("content-type", "text/plain; charset=utf-8"),
    ("content-length", "70000"),
    ("te", "trailers"),
    ("x-empty", ""),
];
const TRAILERS: &[(&str, &str)] = &[("x-checksum", "abc"), ("x-req-trailer", "1")];

/// One field as either side reports it: name, value, never-indexed.
type Field = (String, String, bool);

/// A client pod in the cgroup; `web` and its fork `web-fork` both run
/// `h2_inspect.py`; `web` is declared `h2c`.
struct Setup(Forked);

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        Self(
            Forked::service("web", PORT)
                .protocol("h2c")
                .servers(Servers::H2Inspect)
                .build("df"),
        )
    }

    fn agent(&self) -> Agent {
        self.0.agent().spawn()
    }

    /// One `h2raw.py request` to `web` from the client pod, steered (in the
    /// cgroup) or direct; its report, with "body" parsed as the server's
    /// JSON description of the request.
    fn request(&self, steered: bool, args: &[&str]) -> Value {
        let web = self.net.pod("web").ip4.to_string();
        let port = PORT.to_string();
        let mut all = vec![H2RAW, "request", &web, &port];
        all.extend_from_slice(args);
        let client = self.net.pod("client");
        let output = if steered {
            client.exec_in(&self.cgroup, "python3", &all)
        } else {
            client.exec("python3", &all)
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            let stderr = String::from_utf8_lossy(&output.stderr);
            panic!("h2raw {args:?}: {e}\n{stdout}\n{stderr}")
        });
        assert_eq!(report["status"], 200, "{report}");
        let body = report["body"].as_str().unwrap_or_default();
        report["body"] = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {report}"));
        report
    }
}

/// `[[name, value, never_indexed], ...]` from a report (empty if null).
fn fields(list: &Value) -> Vec<Field> {
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|f| {
            let text = |i: usize| f[i].as_str().unwrap_or_else(|| panic!("{f}")).to_owned();
            (text(0), text(1), f[2] == true)
        })
        .collect()
}

/// Regular fields by name, each name's values in order: equal for two
/// header lists iff they hold the same fields in the same order per name.
fn by_name(fields: &[Field]) -> BTreeMap<&str, Vec<&str>> {
    let mut names = BTreeMap::<_, Vec<_>>::new();
    for (name, value, _) in fields.iter().filter(|f| !f.0.starts_with(':')) {
        names.entry(name.as_str()).or_default().push(value.as_str());
    }
    names
}

fn pseudo(fields: &[Field]) -> BTreeMap<&str, &str> {
    let pseudo = fields.iter().filter(|f| f.0.starts_with(':'));
    pseudo.map(|(n, v, _)| (n.as_str(), v.as_str())).collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<Field> {
    pairs
        .iter()
        .map(|&(n, v)| (n.into(), v.into(), false))
        .collect()
}

/// The full request: method, path and authority, FIELDS (plus `extra`),
/// the body and TRAILERS.
fn request_args(extra: &[(&str, &str)]) -> Vec<String> {
    let head = ["--method", "POST", "--path", PATH, "--authority", AUTHORITY];
    let mut args: Vec<String> = head.map(String::from).into();
    let size = BODY_BYTES.to_string();
    args.extend(["--index-sensitive", "--data-size", &size].map(String::from));
    let lists = [
        ("--header", FIELDS),
        ("--header", extra),
        ("--trailer", TRAILERS),
    ];
    for (flag, pairs) in lists {
        let pairs = pairs.iter().map(|(n, v)| format!("{n}={v}"));
        args.extend(pairs.flat_map(|pair| [flag.to_owned(), pair]));
    }
    args
}

/// The never-indexed flag of each `name` field, in order.
fn never_indexed(fields: &[Field], name: &str) -> Vec<bool> {
    fields.iter().filter(|f| f.0 == name).map(|f| f.2).collect()
}

#[test]
fn keyed_and_unkeyed_requests_and_their_responses_cross_field_for_field() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let args = request_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Control, not steered: the client really sends the credentials indexable.
    let direct = setup.request(false, &args);
    for name in ["authorization", "cookie"] {
        let seen = never_indexed(&fields(&direct["body"]["headers"]), name);
        assert!(seen.iter().all(|n| !n), "{name} sent indexable: {seen:?}");
    }
    let _agent = setup.agent();
    let keyed = [("baggage", "detour-routing-key=feature-x")];
    for (extra, expected) in [(&keyed[..], "web-fork"), (&[][..], "web")] {
        let args = request_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = setup.request(true, &args);
        let seen = &report["body"];
        assert_eq!(seen["served_by"], expected, "{report}");

        let received = fields(&seen["headers"]);
        let mut sent = owned(FIELDS);
        sent.extend(owned(extra));
        assert_eq!(
            by_name(&received),
            by_name(&sent),
            "same fields, same order within each name, nothing added: {received:?}"
        );
        let expected_pseudo = BTreeMap::from([
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", AUTHORITY),
            (":path", PATH),
        ]);
        assert_eq!(pseudo(&received), expected_pseudo, "{received:?}");
        for (name, _, never) in received.iter().filter(|f| !f.0.starts_with(':')) {
            let sensitive = name == "authorization" || name == "cookie";
            assert_eq!(*never, sensitive, "{name} never-indexed: {received:?}");
        }
        assert_eq!(seen["body_bytes"], BODY_BYTES, "request body");
        assert_eq!(seen["body"], "x".repeat(BODY_BYTES), "request body");
        assert_eq!(
            fields(&seen["trailers"]),
            owned(TRAILERS),
            "request trailers"
        );

        // The response: what the upstream says it sent.
        let head = fields(&report["header_list"]);
        let upstream_head = fields(&seen["response_headers"]);
        assert_eq!(report["status"], 200);
        assert_eq!(by_name(&head), by_name(&upstream_head), "{head:?}");
        assert_eq!(pseudo(&head), BTreeMap::from([(":status", "200")]));
        assert_eq!(by_name(&head)["x-multi"], ["first", "second"]);
        assert_eq!(never_indexed(&head, "set-cookie"), [true]);
        let trailers = fields(&report["trailer_list"]);
        let upstream_trailers = fields(&seen["response_trailers"]);
        assert_eq!(trailers, upstream_trailers, "response trailers");
        assert_eq!(report["stream_rst"], Value::Null, "{report}");
    }
}

#[test]
#[ignore = "known limitation: h2 0.4's HPACK decoder drops the never-indexed flag, so only \
            authorization, cookie, proxy-authorization and set-cookie are sent never-indexed \
            (docs/routing.md, HTTP/2 behaviour)"]
fn a_field_sent_never_indexed_stays_never_indexed_both_ways() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let args = ["--header", "x-api-key=k-123", "--never-index", "x-api-key"];
    let sent = |report: &Value| never_indexed(&fields(&report["body"]["headers"]), "x-api-key");
    let returned = |report: &Value| never_indexed(&fields(&report["header_list"]), "x-resp-secret");
    let direct = setup.request(false, &args);
    assert_eq!(sent(&direct), [true], "control: {direct}");
    assert_eq!(returned(&direct), [true], "control: {direct}");
    let _agent = setup.agent();
    let report = setup.request(true, &args);
    assert_eq!(report["body"]["served_by"], "web");
    // RFC 7541 §6.2.3: an intermediary keeps a never-indexed field so. (h2
    // 0.4's HPACK decoder drops the flag, "TODO: Track that this should never
    // be indexed"; detour re-marks only its four credential names.)
    assert_eq!(
        (sent(&report), returned(&report)),
        (vec![true], vec![true]),
        "(request x-api-key, response x-resp-secret) never-indexed through the proxy"
    );
}

#[test]
fn an_informational_response_reaches_the_client() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let args = ["--path", "/early-hints"];
    let direct = setup.request(false, &args);
    let hints = direct["body"]["informational"].clone();
    assert_eq!(direct["informational"], hints, "control: {direct}");
    assert_eq!(hints.as_array().map(Vec::len), Some(1), "{direct}");
    let _agent = setup.agent();
    let report = setup.request(true, &args);
    assert_eq!(report["body"]["served_by"], "web");
    // h2's client keeps a 1xx for `poll_informational`; the proxy must pass
    // it on with `send_informational`.
    assert_eq!(report["informational"], hints, "103 Early Hints: {report}");
}
