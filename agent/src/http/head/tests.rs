//! Request and response head parsing: the happy paths, the size limits, and
//! one test per request-smuggling vector.

use super::*;
use crate::http::routing_key::RoutingKeys;

fn keys() -> RoutingKeys {
    RoutingKeys::new(&["detour-routing-key".to_owned()], &[]).expect("valid routing key names")
}

fn request(raw: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    parse_request(raw, &mut FieldLines::default()).map(|parsed| parsed.map(|p| p.head))
}

fn complete_request(raw: &[u8]) -> RequestHead {
    match request(raw) {
        Ok(Some(head)) => head,
        other => panic!(
            "expected a complete request from {:?}, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

fn request_error(raw: &[u8]) -> HeadError {
    match request(raw) {
        Err(error) => error,
        other => panic!(
            "expected {:?} to be refused, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

fn response(raw: &[u8], method: Method) -> ResponseHead {
    match parse_response(raw, method) {
        Ok(Some(head)) => head,
        other => panic!(
            "expected a complete response from {:?}, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

fn response_error(raw: &[u8], method: Method) -> HeadError {
    match parse_response(raw, method) {
        Err(error) => error,
        other => panic!(
            "expected {:?} to be refused, got {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

/// A request with the given header lines (each without its CRLF).
fn with_headers(lines: &[&str]) -> Vec<u8> {
    let mut raw = b"POST /upload HTTP/1.1\r\nHost: reviews\r\n".to_vec();
    for line in lines {
        raw.extend_from_slice(line.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

#[test]
fn simple_get() {
    let raw = b"GET /reviews/1 HTTP/1.1\r\nHost: reviews\r\nAccept: */*\r\n\r\n";
    let head = complete_request(raw);
    assert_eq!(
        head,
        RequestHead {
            len: raw.len(),
            method: Method::Get,
            minor_version: 1,
            framing: Framing::Empty,
            keep_alive: true,
            expect_continue: false,
            upgrade: false,
            stripped: Stripped::default(),
        }
    );
}

#[test]
fn head_length_stops_at_the_empty_line() {
    let head = complete_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n");
    assert_eq!(head.len, 27);
}

#[test]
fn field_lines_are_handed_over_as_received_for_routing() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nbaggage: detour-routing-key=feature-x\r\n\r\n";
    let mut lines = FieldLines::default();
    let parsed = match parse_request(raw, &mut lines) {
        Ok(Some(parsed)) => parsed,
        other => panic!("expected a complete request, got {other:?}"),
    };
    let fields: Vec<(&[u8], &[u8])> = parsed.fields().collect();
    assert_eq!(
        fields,
        [
            (&b"Host"[..], &b"a"[..]),
            (&b"baggage"[..], &b"detour-routing-key=feature-x"[..])
        ]
    );
    assert_eq!(
        keys().extract(parsed.fields()).as_deref(),
        Some("feature-x")
    );
}

#[test]
fn methods_are_case_sensitive() {
    for (token, method) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("TRACE", Method::Trace),
        ("PATCH", Method::Patch),
        ("PROPFIND", Method::Other),
        ("get", Method::Other),
    ] {
        let raw = format!("{token} / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(complete_request(raw.as_bytes()).method, method, "{token}");
    }
}

#[test]
fn post_with_content_length() {
    let raw = with_headers(&["Content-Length: 5"]);
    let head = complete_request(&raw);
    assert_eq!(head.method, Method::Post);
    assert_eq!(head.framing, Framing::Length(5));
}

#[test]
fn repeated_identical_content_lengths_are_one_length() {
    for lines in [
        &["Content-Length: 42", "Content-Length: 42"][..],
        &["Content-Length: 42, 42"][..],
        &["Content-Length: 42,42", "content-length:42"][..],
        &["Content-Length: 042"][..],
        &["Content-Length: 18446744073709551615"][..],
    ] {
        let expected = if lines[0].ends_with("615") {
            u64::MAX
        } else {
            42
        };
        assert_eq!(
            complete_request(&with_headers(lines)).framing,
            Framing::Length(expected),
            "{lines:?}"
        );
    }
}

#[test]
fn chunked_request() {
    for lines in [
        &["Transfer-Encoding: chunked"][..],
        &["transfer-encoding:  CHUNKED  "][..],
        &["Transfer-Encoding: gzip, chunked"][..],
        &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"][..],
    ] {
        assert_eq!(
            complete_request(&with_headers(lines)).framing,
            Framing::Chunked,
            "{lines:?}"
        );
    }
}

#[test]
fn keep_alive_by_version_and_connection_tokens() {
    for (version, connection, keep_alive) in [
        ("1.1", None, true),
        ("1.1", Some("keep-alive"), true),
        ("1.1", Some("close"), false),
        ("1.1", Some("Close"), false),
        ("1.1", Some("upgrade, CLOSE"), false),
        ("1.1", Some("keep-alive, close"), false),
        ("1.1", Some("closed"), true),
        ("1.0", None, false),
        ("1.0", Some("keep-alive"), true),
        ("1.0", Some("Keep-Alive"), true),
        ("1.0", Some("te ,\tkeep-alive "), true),
        ("1.0", Some("close, keep-alive"), false),
        ("1.0", Some("keep-alived"), false),
    ] {
        let mut raw = format!("GET / HTTP/{version}\r\nHost: a\r\n");
        if let Some(value) = connection {
            raw.push_str(&format!("Connection: {value}\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(
            complete_request(raw.as_bytes()).keep_alive,
            keep_alive,
            "{raw:?}"
        );
    }
}

#[test]
fn connection_tokens_from_several_fields() {
    let raw = b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert!(!complete_request(raw).keep_alive);
    let raw = b"GET / HTTP/1.0\r\nConnection: foo\r\nConnection: keep-alive\r\n\r\n";
    assert!(complete_request(raw).keep_alive);
}

#[test]
fn expect_continue() {
    let head = complete_request(&with_headers(&[
        "Content-Length: 10",
        "Expect: 100-Continue",
    ]));
    assert!(head.expect_continue);
    assert!(!complete_request(&with_headers(&["Expect: 200-ok"])).expect_continue);
    // RFC 9110 §10.1.1: ignored in HTTP/1.0.
    let raw = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    assert!(!complete_request(raw).expect_continue);
}

#[test]
fn websocket_upgrade_and_connect() {
    let raw = b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    assert!(complete_request(raw).upgrade);
    let raw = b"CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\n\r\n";
    let head = complete_request(raw);
    assert_eq!(head.method, Method::Connect);
    assert!(head.upgrade);
}

#[test]
fn upgrade_needs_both_fields_and_http11() {
    for raw in [
        &b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade:\r\n\r\n"[..],
        &b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
    ] {
        assert!(
            !complete_request(raw).upgrade,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn leading_empty_lines_are_tolerated() {
    let raw = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(complete_request(raw).len, raw.len());
}

#[test]
fn every_prefix_of_a_request_is_incomplete() {
    let raw = b"POST /a?b=c HTTP/1.1\r\nHost: reviews\r\nConnection: keep-alive\r\n\
        Transfer-Encoding: chunked\r\nbaggage: detour-routing-key=x\r\n\r\n";
    for end in 0..raw.len() {
        assert_eq!(request(&raw[..end]), Ok(None), "prefix of {end} bytes");
    }
    assert_eq!(complete_request(raw).len, raw.len());
}

#[test]
fn every_prefix_of_a_response_is_incomplete() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";
    for end in 0..raw.len() {
        assert_eq!(
            parse_response(&raw[..end], Method::Get),
            Ok(None),
            "prefix of {end} bytes"
        );
    }
    assert_eq!(response(raw, Method::Get).len, raw.len());
}

/// A request head of exactly `len` bytes, padded with one long header.
fn head_of_len(len: usize) -> Vec<u8> {
    let start = b"GET / HTTP/1.1\r\nX-Pad: ";
    let mut raw = start.to_vec();
    raw.resize(len - 4, b'p');
    raw.extend_from_slice(b"\r\n\r\n");
    raw
}

#[test]
fn head_size_limit_is_431() {
    let fits = head_of_len(MAX_HEAD_BYTES);
    assert_eq!(complete_request(&fits).len, MAX_HEAD_BYTES);

    let over = head_of_len(MAX_HEAD_BYTES + 1);
    assert_eq!(request_error(&over), HeadError::TooLarge);
    assert_eq!(HeadError::TooLarge.status(), 431);

    // Still no end after MAX_HEAD_BYTES: refused without waiting for more.
    let unfinished = &over[..MAX_HEAD_BYTES];
    assert_eq!(request_error(unfinished), HeadError::TooLarge);
    assert_eq!(request(&over[..MAX_HEAD_BYTES - 1]), Ok(None));

    let mut upstream = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
    upstream.resize(MAX_HEAD_BYTES, b'p');
    assert_eq!(
        parse_response(&upstream, Method::Get),
        Err(HeadError::TooLarge)
    );
    assert_eq!(
        parse_response(&upstream[..MAX_HEAD_BYTES - 1], Method::Get),
        Ok(None)
    );
}

#[test]
fn too_many_headers_is_431() {
    let lines: Vec<String> = (1..MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    // `with_headers` adds Host: exactly MAX_HEADERS fields.
    assert!(request(&with_headers(&lines)).is_ok_and(|head| head.is_some()));

    let mut one_more = lines.clone();
    one_more.push("X-Last: v");
    let error = request_error(&with_headers(&one_more));
    assert_eq!(error, HeadError::TooManyHeaders);
    assert_eq!(error.status(), 431);
}

/// Each smuggling vector is refused with a 400.
fn assert_refused(lines: &[&str], expected: HeadError) {
    let error = request_error(&with_headers(lines));
    assert_eq!(error, expected, "{lines:?}");
    assert_eq!(error.status(), 400);
}

#[test]
fn content_length_and_transfer_encoding_together_are_refused() {
    let both = HeadError::Framing("both Transfer-Encoding and Content-Length");
    assert_refused(
        &["Content-Length: 5", "Transfer-Encoding: chunked"],
        both.clone(),
    );
    assert_refused(
        &["Transfer-Encoding: chunked", "Content-Length: 5"],
        both.clone(),
    );
    assert_refused(
        &["Transfer-Encoding: chunked", "Content-Length: nope"],
        both,
    );
}

#[test]
fn transfer_encoding_must_end_in_a_single_chunked() {
    let not_final = HeadError::Framing("Transfer-Encoding does not end in chunked");
    assert_refused(&["Transfer-Encoding: chunked, identity"], not_final.clone());
    assert_refused(&["Transfer-Encoding: gzip"], not_final.clone());
    assert_refused(
        &["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"],
        not_final.clone(),
    );
    assert_refused(&["Transfer-Encoding: xchunked"], not_final.clone());
    assert_refused(&["Transfer-Encoding: chunked-false"], not_final);
    let twice = HeadError::Framing("chunked applied more than once");
    assert_refused(&["Transfer-Encoding: chunked, chunked"], twice.clone());
    assert_refused(
        &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        twice,
    );
}

#[test]
fn transfer_encoding_lists_must_be_bare_tokens() {
    let empty = HeadError::Framing("empty Transfer-Encoding element");
    assert_refused(&["Transfer-Encoding:"], empty.clone());
    assert_refused(&["Transfer-Encoding: , chunked"], empty.clone());
    assert_refused(&["Transfer-Encoding: chunked,"], empty);
    let not_token = HeadError::Framing("transfer coding is not a bare token");
    assert_refused(&["Transfer-Encoding: \"chunked\""], not_token.clone());
    assert_refused(&["Transfer-Encoding: chunked;q=1"], not_token.clone());
    assert_refused(&["Transfer-Encoding: gzip chunked"], not_token);
}

#[test]
fn transfer_encoding_in_http10_is_refused() {
    let raw = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        request_error(raw),
        HeadError::Framing("Transfer-Encoding in HTTP/1.0")
    );
}

#[test]
fn invalid_or_conflicting_content_length_is_refused() {
    let invalid = HeadError::Framing("invalid Content-Length");
    for value in [
        "+5",
        "-5",
        "5 5",
        "0x5",
        "5a",
        "",
        "5,",
        ",5",
        "5;",
        "18446744073709551616",
        "٥",
    ] {
        assert_refused(&[&format!("Content-Length: {value}")], invalid.clone());
    }
    let conflicting = HeadError::Framing("conflicting Content-Length values");
    assert_refused(&["Content-Length: 1,2"], conflicting.clone());
    assert_refused(
        &["Content-Length: 5", "Content-Length: 6"],
        conflicting.clone(),
    );
    assert_refused(&["Content-Length: 5", "Content-Length: 5, 6"], conflicting);
}

#[test]
fn whitespace_before_the_colon_is_refused() {
    let invalid_name = HeadError::Malformed("invalid header name");
    assert_refused(&["Transfer-Encoding : chunked"], invalid_name.clone());
    assert_refused(&["Content-Length\t: 5"], invalid_name);
}

#[test]
fn obs_fold_is_refused() {
    let invalid_name = HeadError::Malformed("invalid header name");
    assert_refused(
        &["Transfer-Encoding: gzip,", " chunked"],
        invalid_name.clone(),
    );
    assert_refused(&["X-Folded: a", "\tb"], invalid_name);
}

#[test]
fn bare_lf_anywhere_is_refused() {
    let bare = HeadError::Malformed("line not ended by CRLF");
    for raw in [
        &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: a\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: a\r\n\n"[..],
        &b"GET / HTTP/1.1\r\nHost: a\nTransfer-Encoding: chunked\r\n\r\n"[..],
        &b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
    ] {
        assert_eq!(
            request_error(raw),
            bare,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(
        response_error(b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", Method::Get),
        bare
    );
}

#[test]
fn control_bytes_in_values_are_refused() {
    let invalid_value = HeadError::Malformed("invalid header value");
    assert_refused(&["X-Nul: a\0b"], invalid_value.clone());
    assert_refused(&["X-Cr: a\rb"], invalid_value.clone());
    assert_refused(&["Content-Length: 5\r0"], invalid_value.clone());
    assert_refused(&["X-Del: a\x7fb"], invalid_value);
}

#[test]
fn malformed_request_lines_are_refused() {
    for raw in [
        &b"GET  / HTTP/1.1\r\n\r\n"[..],
        &b"GET / HTTP/1.1 \r\n\r\n"[..],
        &b"GET /a b HTTP/1.1\r\n\r\n"[..],
        &b"GET / HTTP/1.1\rHost: a\r\n\r\n"[..],
        &b"GET\0 / HTTP/1.1\r\n\r\n"[..],
        &b"GET /\0 HTTP/1.1\r\n\r\n"[..],
        &b" GET / HTTP/1.1\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"[..],
    ] {
        let error = request_error(raw);
        assert!(
            matches!(error, HeadError::Malformed(_)),
            "{:?}: {error:?}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(error.status(), 400);
    }
}

#[test]
fn only_http10_and_http11() {
    for version in ["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "http/1.1", "HTTP/1.10"] {
        let raw = format!("GET / {version}\r\nHost: a\r\n\r\n");
        let error = request_error(raw.as_bytes());
        assert!(
            matches!(error, HeadError::Malformed(_)),
            "{version}: {error:?}"
        );
    }
}

#[test]
fn response_framing_without_a_body() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    assert_eq!(response(raw, Method::Head).framing, Framing::Empty);
    for status in [
        "100 Continue",
        "101 Switching Protocols",
        "103 Early Hints",
        "204 No Content",
        "304 Not Modified",
    ] {
        let raw = format!("HTTP/1.1 {status}\r\n\r\n");
        let head = response(raw.as_bytes(), Method::Get);
        assert_eq!(head.framing, Framing::Empty, "{status}");
        assert!(head.keep_alive, "{status}");
    }
    // 304 keeps the length of the representation it stands for.
    let head = response(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
        Method::Get,
    );
    assert_eq!((head.framing, head.keep_alive), (Framing::Empty, true));
    // A tunnel is established by any 2xx to CONNECT.
    assert_eq!(response(raw, Method::Connect).framing, Framing::Empty);
}

#[test]
fn a_204_with_body_framing_is_not_reused() {
    for field in ["Transfer-Encoding: chunked", "Content-Length: 5"] {
        let raw = format!("HTTP/1.1 204 No Content\r\n{field}\r\n\r\n");
        let head = response(raw.as_bytes(), Method::Get);
        assert_eq!(
            (head.framing, head.keep_alive),
            (Framing::Empty, false),
            "{field}"
        );
    }
    let head = response(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        Method::Get,
    );
    assert!(head.keep_alive);
}

#[test]
fn response_framing_with_a_body() {
    let head = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        Method::Get,
    );
    assert_eq!(
        (head.status, head.framing, head.keep_alive),
        (200, Framing::Chunked, true)
    );

    let head = response(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n",
        Method::Post,
    );
    assert_eq!(
        (head.status, head.framing, head.keep_alive),
        (404, Framing::Length(9), true)
    );

    let head = response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Method::Get,
    );
    assert_eq!((head.framing, head.keep_alive), (Framing::Length(0), false));

    let head = response(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
        Method::Get,
    );
    assert_eq!(
        (head.minor_version, head.framing, head.keep_alive),
        (0, Framing::Length(2), true)
    );

    let head = response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", Method::Get);
    assert!(!head.keep_alive);
}

#[test]
fn response_without_length_runs_until_close() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"[..],
        &b"HTTP/1.1 200\r\nConnection: keep-alive\r\n\r\n"[..],
    ] {
        let head = response(raw, Method::Get);
        assert_eq!(
            (head.framing, head.keep_alive),
            (Framing::UntilClose, false),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn ambiguous_responses_are_refused() {
    let both = HeadError::Framing("both Transfer-Encoding and Content-Length");
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(response_error(raw, Method::Get), both);
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(response_error(raw, Method::Get), both);

    for (raw, expected) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"[..],
            "conflicting Content-Length values",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
            "invalid Content-Length",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"[..],
            "chunked applied more than once",
        ),
        (
            &b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            "Transfer-Encoding in HTTP/1.0",
        ),
    ] {
        assert_eq!(
            response_error(raw, Method::Get),
            HeadError::Framing(expected)
        );
    }
}

#[test]
fn malformed_responses_are_refused() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nX-A: \0\r\n\r\n"[..],
        &b"HTTP/1.1 20 OK\r\n\r\n"[..],
        &b"HTTP/1.1 099 Low\r\n\r\n"[..],
        &b"HTTP/2.0 200 OK\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\rX: y\r\n\r\n"[..],
    ] {
        let error = response_error(raw, Method::Get);
        assert!(
            matches!(error, HeadError::Malformed(_)),
            "{:?}: {error:?}",
            String::from_utf8_lossy(raw)
        );
    }
}
