//! Request and response heads (`detour::http::head`): no panic on any bytes,
//! and a head's meaning does not depend on how its bytes arrive.
//!
//! The proxy parses whatever it has buffered and reads more on `Ok(None)`.
//! So a prefix of the input must parse either as `Ok(None)` or exactly as
//! the whole input does, and for a head that parses at `len` bytes:
//! - every shorter prefix is `Ok(None)`, never an error: a valid request must
//!   not be refused because of where a TCP segment ended;
//! - the bytes after it do not change the result.
//!
//! The input is parsed as a request and as a response to each method.

#![no_main]

use std::{fmt::Debug, sync::LazyLock};

use detour::http::{
    head::{self, Framing, HeadError, MAX_HEAD_BYTES, Method},
    routing_key::{RoutingKeys, is_valid_routing_key},
};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 10] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Options,
    Method::Trace,
    Method::Connect,
    Method::Patch,
    Method::Other,
];

static KEYS: LazyLock<RoutingKeys> = LazyLock::new(RoutingKeys::default);

fuzz_target!(|data: &[u8]| {
    // The head and the routing key its field lines carry, as the proxy reads them.
    let parse = |buf: &[u8]| {
        let mut lines = head::FieldLines::default();
        head::parse_request(buf, &mut lines).map(|parsed| {
            parsed.map(|parsed| {
                let key = KEYS.extract(parsed.fields());
                (parsed.head, key)
            })
        })
    };
    if let Ok(Some((request, key))) = check_arrival(data, parse, |(request, _)| request.len) {
        assert!(
            request.minor_version <= 1,
            "HTTP/1.{} accepted",
            request.minor_version
        );
        if let Some(key) = &key {
            assert!(is_valid_routing_key(key), "invalid routing key {key:?}");
        }
        assert_ne!(request.framing, Framing::UntilClose, "request until close");
    }

    for method in METHODS {
        let parse = |buf: &[u8]| head::parse_response(buf, method);
        if let Ok(Some(response)) = check_arrival(data, parse, |response| response.len) {
            assert!(response.status >= 100, "status {}", response.status);
            if response.framing == Framing::UntilClose {
                assert!(!response.keep_alive, "reusable after a body until close");
            }
        }
    }
});

/// Parses `data` and some of its prefixes, checks the invariants of the
/// module docs, and returns what `data` parsed to.
fn check_arrival<T: Debug + PartialEq>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, HeadError>,
    head_len: impl Fn(&T) -> usize,
) -> Result<Option<T>, HeadError> {
    let whole = parse(data);
    let len = match &whole {
        Ok(Some(head)) => Some(head_len(head)),
        _ => None,
    };
    if let Some(len) = len {
        assert!(
            0 < len && len <= data.len().min(MAX_HEAD_BYTES),
            "head of {len} bytes in {}",
            data.len()
        );
    }
    // Every prefix would be quadratic; these cover the boundaries, and one
    // depends on the input.
    let derived = data
        .iter()
        .fold(0usize, |acc, &b| acc.wrapping_mul(31) ^ usize::from(b));
    let prefixes = [
        0,
        derived % (data.len() + 1),
        data.len() / 2,
        data.len().saturating_sub(1),
        len.map_or(0, |len| len - 1),
        len.unwrap_or(0),
    ];
    for prefix in prefixes {
        let partial = parse(&data[..prefix]);
        match len {
            Some(len) if prefix < len => assert_eq!(
                partial,
                Ok(None),
                "a {prefix}-byte prefix of a {len}-byte head"
            ),
            Some(len) => assert_eq!(
                partial, whole,
                "a {prefix}-byte prefix of a {len}-byte head and trailing bytes"
            ),
            None => assert!(
                partial == Ok(None) || partial == whole,
                "the {prefix}-byte prefix gave {partial:?}, all {} bytes {whole:?}",
                data.len()
            ),
        }
    }
    whole
}
