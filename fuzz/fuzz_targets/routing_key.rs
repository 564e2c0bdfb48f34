//! Routing-key extraction (`detour::http::routing_key`): no panic on any
//! bytes, every key returned passes `is_valid_routing_key`, and the sources
//! agree with each other.
//!
//! The input is read three ways, with the default key names and with a
//! configuration that has custom headers too:
//! - as one `baggage` value and as one `tracestate` value;
//! - as header lines (`name:value`, split at `\n`) for `RoutingKeys::extract`.
//!
//! Across fields, several `baggage` fields are one list (and so are several
//! `tracestate` fields), and baggage beats tracestate beats everything else,
//! so whenever the joined lists give a key, `extract` must give that key.
//! Header names are case-insensitive, so upper-casing them changes nothing.
//! Read as a request target too (query parameter and cookie sources), a key
//! from a header still wins.

#![no_main]

use std::{borrow::Cow, sync::LazyLock};

use detour::http::routing_key::{RoutingKeys, is_valid_routing_key};
use httparse::Header;
use libfuzzer_sys::fuzz_target;

static CONFIGS: LazyLock<[RoutingKeys; 2]> = LazyLock::new(|| {
    let custom = RoutingKeys::with_browser_sources(
        &["Tenant".into(), "sd-sandbox".into()],
        &["x-detour-key".into(), "x-route".into()],
        &["sandbox".into()],
        &["sandbox".into()],
    )
    .expect("valid routing-key configuration");
    [RoutingKeys::default(), custom]
});

fuzz_target!(|data: &[u8]| {
    let fields = header_fields(data);
    let headers: Vec<Header<'_>> = fields
        .iter()
        .map(|(name, value)| Header { name, value })
        .collect();
    let upper: Vec<String> = fields
        .iter()
        .map(|(name, _)| name.to_ascii_uppercase())
        .collect();
    let upper_headers: Vec<Header<'_>> = upper
        .iter()
        .zip(&fields)
        .map(|(name, (_, value))| Header { name, value })
        .collect();

    for keys in &*CONFIGS {
        let baggage = check(keys.from_baggage(data));
        let tracestate = check(keys.from_tracestate(data));
        assert_eq!(
            keys.extract([(&b"baggage"[..], data)]),
            baggage,
            "one baggage field"
        );
        assert_eq!(
            keys.extract([(&b"tracestate"[..], data)]),
            tracestate,
            "one tracestate field"
        );

        let extracted = check(keys.extract(fields_of(&headers)));
        let expected = keys
            .from_baggage(&joined(&headers, "baggage"))
            .or_else(|| keys.from_tracestate(&joined(&headers, "tracestate")));
        if expected.is_some() {
            assert_eq!(extracted, expected, "headers {headers:?}");
        }
        assert_eq!(
            keys.extract(fields_of(&upper_headers)),
            extracted,
            "upper-cased names changed the key"
        );
        // With the input as the request target too: a header key still wins,
        // and whatever comes from the query or a cookie is a valid key.
        let with_target = check(keys.extract_request(Some(data), || fields_of(&headers)));
        if extracted.is_some() {
            assert_eq!(
                with_target, extracted,
                "a header key beats the query and cookies"
            );
        }
    }
});

/// Header lines as the `(name, value)` pairs extraction reads.
fn fields_of<'h>(headers: &'h [Header<'h>]) -> impl Iterator<Item = (&'h [u8], &'h [u8])> {
    headers.iter().map(|h| (h.name.as_bytes(), h.value))
}

/// Asserts that a returned key is valid.
fn check(key: Option<String>) -> Option<String> {
    if let Some(key) = &key {
        assert!(is_valid_routing_key(key), "invalid routing key {key:?}");
    }
    key
}

/// `name:value` lines; a line without a colon is skipped.
fn header_fields(data: &[u8]) -> Vec<(Cow<'_, str>, &[u8])> {
    data.split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((String::from_utf8_lossy(&line[..colon]), &line[colon + 1..]))
        })
        .collect()
}

/// The values of every `name` field, joined into one list.
fn joined(headers: &[Header<'_>], name: &str) -> Vec<u8> {
    let values: Vec<&[u8]> = headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
        .collect();
    values.join(&b","[..])
}
