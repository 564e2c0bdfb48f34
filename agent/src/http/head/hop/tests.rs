//! Which `Connection` lines are left out of a request head, and that
//! everything else is forwarded byte for byte.

use crate::http::{
    head::{FieldLines, HeadError, Method, RequestHead, parse_request, parse_response},
    routing_key::RoutingKeys,
};

fn parsed(raw: &[u8]) -> RequestHead {
    match parse_request(raw, &mut FieldLines::default()) {
        Ok(Some(parsed)) => parsed.head,
        other => panic!(
            "expected a complete request from {:?}, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

/// What the proxy writes upstream for `raw` (a head, maybe with more after it).
fn forwarded(raw: &[u8]) -> Vec<u8> {
    parsed(raw).stripped.kept(raw).collect::<Vec<_>>().concat()
}

fn request(version: &str, lines: &[&str]) -> Vec<u8> {
    let mut raw = format!("GET /r?x=1 HTTP/{version}\r\nHost: reviews\r\n");
    for line in lines {
        raw.push_str(line);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

#[test]
fn connection_close_alone_is_left_out() {
    for value in ["close", "Close", "CLOSE", " close", "close\t", "\t close  "] {
        let raw = request(
            "1.1",
            &[
                "baggage: detour-routing-key=feature-x",
                &format!("Connection:{value}"),
                "Accept: */*",
            ],
        );
        let head = parsed(&raw);
        let line = format!("Connection:{value}\r\n");
        let start = raw
            .windows(line.len())
            .position(|w| w == line.as_bytes())
            .expect("the line is in the head");
        assert_eq!(
            head.stripped.lines(),
            std::slice::from_ref(&(start..start + line.len())),
            "{value:?}"
        );
        assert_eq!(
            forwarded(&raw),
            request(
                "1.1",
                &["baggage: detour-routing-key=feature-x", "Accept: */*"]
            ),
            "{value:?}"
        );
        assert!(!head.keep_alive, "the client connection still closes");
        let key = RoutingKeys::default().extract(
            parse_request(&raw, &mut FieldLines::default())
                .ok()
                .flatten()
                .expect("a complete request")
                .fields(),
        );
        assert_eq!(key.as_deref(), Some("feature-x"), "{value:?}");
    }
}

#[test]
fn first_and_last_field_lines_and_leading_empty_lines() {
    let raw = b"\r\nGET / HTTP/1.1\r\nconnection: close\r\nHost: a\r\n\r\n";
    assert_eq!(
        parsed(raw).stripped.lines(),
        std::slice::from_ref(&(18..37))
    );
    assert_eq!(forwarded(raw), b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_eq!(forwarded(raw), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let raw = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(forwarded(raw), b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn two_connection_close_fields_are_both_left_out() {
    let raw = request("1.1", &["Connection: close", "X-A: 1", "Connection: close"]);
    assert_eq!(parsed(&raw).stripped.lines().len(), 2);
    assert_eq!(forwarded(&raw), request("1.1", &["X-A: 1"]));
    // Adjacent lines leave an empty piece between them; nothing is lost.
    let raw = request("1.1", &["Connection: close", "connection: close", "X-A: 1"]);
    assert_eq!(forwarded(&raw), request("1.1", &["X-A: 1"]));
}

#[test]
fn up_to_max_lines_fields_are_left_out_and_more_go_unchanged() {
    let lines = vec!["Connection: close"; super::MAX_LINES];
    assert_eq!(forwarded(&request("1.1", &lines)), request("1.1", &[]));
    let lines = vec!["Connection: close"; super::MAX_LINES + 1];
    let raw = request("1.1", &lines);
    assert!(parsed(&raw).stripped.is_empty());
}

#[test]
fn anything_but_a_lone_close_goes_unchanged() {
    for lines in [
        &["Connection: close, x-foo", "X-Foo: bar"][..],
        &["Connection: x-foo, close"],
        &["Connection: close, close"],
        &["Connection: close,"],
        &["Connection: ,close"],
        &["Connection: keep-alive"],
        &["Connection: closed"],
        &["Connection:"],
        &["Connection: close", "Connection: keep-alive"],
        &["Connection: x-foo", "Connection: close"],
        &[],
    ] {
        let raw = request("1.1", lines);
        assert!(parsed(&raw).stripped.is_empty(), "{lines:?}");
        assert_eq!(forwarded(&raw), raw, "{lines:?}");
    }
}

#[test]
fn http10_upgrades_and_connect_go_unchanged() {
    for raw in [
        request("1.0", &["Connection: close"]),
        request("1.1", &["Connection: close", "Upgrade: websocket"]),
        b"CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\nConnection: close\r\n\r\n".to_vec(),
    ] {
        let head = parsed(&raw);
        assert!(
            head.stripped.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&raw)
        );
        assert!(!head.keep_alive);
    }
}

#[test]
fn bytes_after_the_head_are_forwarded_too() {
    let raw = b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhelloGET /next";
    assert_eq!(
        forwarded(raw),
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /next"
    );
}

#[test]
fn malformed_connection_lines_stay_refused() {
    for raw in [
        &b"GET / HTTP/1.1\r\nConnection: close\r\n keep-alive\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nConnection : close\r\n\r\n",
        b"GET / HTTP/1.1\r\n Connection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\rHost: a\r\n\r\n",
    ] {
        assert!(
            matches!(
                parse_request(raw, &mut FieldLines::default()),
                Err(HeadError::Malformed(_))
            ),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn responses_report_the_close_option() {
    let close = |raw: &[u8]| match parse_response(raw, Method::Get) {
        Ok(Some(head)) => head.close,
        other => panic!("{other:?}"),
    };
    assert!(close(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!close(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!close(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
}
