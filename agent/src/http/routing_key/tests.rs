use super::*;

fn keys(names: &[&str], custom: &[&str]) -> RoutingKeys {
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let custom: Vec<String> = custom.iter().map(|&c| c.to_owned()).collect();
    RoutingKeys::new(&names, &custom).expect("valid routing key configuration")
}

fn h<'a>(name: &'a str, value: &'a [u8]) -> Field<'a> {
    (name.as_bytes(), value)
}

/// `extract` with the default names and `x-sandbox` as a custom header.
fn extract(headers: &[Field<'_>]) -> Option<String> {
    keys(&DEFAULT_KEY_NAMES, &["x-sandbox"]).extract(headers.iter().copied())
}

fn baggage(value: &[u8]) -> Option<String> {
    extract(&[h("baggage", value)])
}

fn some(key: &str) -> Option<String> {
    Some(key.to_owned())
}

#[test]
fn w3c_baggage_spec_example() {
    let value =
        b"key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue";
    assert_eq!(keys(&["key1"], &[]).from_baggage(value), some("value1"));
    assert_eq!(keys(&["key2"], &[]).from_baggage(value), some("value2"));
    assert_eq!(keys(&["key3"], &[]).from_baggage(value), some("value3"));
    assert_eq!(
        keys(&["property1", "propertyKey"], &[]).from_baggage(value),
        None
    );
    // The spec's other example, for the member without a space.
    let value = b"userId=alice,serverNode=DF%2028,isProduction=false";
    assert_eq!(keys(&["userId"], &[]).from_baggage(value), some("alice"));
    assert_eq!(
        keys(&["serverNode"], &[]).from_baggage(value),
        None,
        "decodes to a space"
    );
}

#[test]
fn default_names_are_a_drop_in_for_signadot() {
    assert_eq!(baggage(b"sd-routing-key=abc"), some("abc"));
    assert_eq!(baggage(b"sd-sandbox=s1"), some("s1"));
    assert_eq!(baggage(b"sd-workspace=w1"), some("w1"));
    assert_eq!(baggage(b"detour-routing-key=d1"), some("d1"));
    assert_eq!(RoutingKeys::default(), keys(&DEFAULT_KEY_NAMES, &[]));
    assert_eq!(
        RoutingKeys::default().from_baggage(b"sd-routing-key=abc"),
        some("abc")
    );
}

#[test]
fn baggage_values_are_percent_decoded() {
    assert_eq!(
        baggage(b"detour-routing-key=team%2Ffeature-x"),
        some("team/feature-x")
    );
    assert_eq!(baggage(b"detour-routing-key=caf%C3%a9"), some("café"));
    assert_eq!(
        baggage(b"detour-routing-key=a+b"),
        some("a+b"),
        "+ is literal in baggage"
    );
    assert_eq!(baggage(b"detour-routing-key=%41%42"), some("AB"));
}

#[test]
fn bad_percent_escapes_and_bad_decoded_keys_give_no_key() {
    for value in [
        &b"detour-routing-key=%zz"[..],
        b"detour-routing-key=%",
        b"detour-routing-key=abc%4",
        b"detour-routing-key=%4g",
        b"detour-routing-key=%FF",         // not UTF-8
        b"detour-routing-key=%C3",         // truncated UTF-8
        b"detour-routing-key=feature%20x", // whitespace
        b"detour-routing-key=a%0Ab",       // control
        b"detour-routing-key=a%7Fb",       // DEL
        b"detour-routing-key=a%C2%85b",    // C1 control (NEL)
        b"detour-routing-key=a%E2%80%83b", // Unicode whitespace (EM SPACE)
    ] {
        assert_eq!(baggage(value), None, "{}", String::from_utf8_lossy(value));
    }
    // A bad member falls through to the next candidate.
    assert_eq!(
        baggage(b"detour-routing-key=%zz, sd-routing-key=ok"),
        some("ok")
    );
}

#[test]
fn properties_are_ignored() {
    assert_eq!(baggage(b"detour-routing-key=abc;ttl=5;flag"), some("abc"));
    assert_eq!(
        baggage(b"detour-routing-key = abc ; p ; q = r"),
        some("abc")
    );
    assert_eq!(
        baggage(b"detour-routing-key=abc;\"weird property\""),
        some("abc")
    );
    assert_eq!(
        baggage(b"other=x;detour-routing-key=abc"),
        None,
        "a property is not a member"
    );
}

#[test]
fn malformed_members_give_no_key_but_spare_the_rest() {
    for value in [
        &b"=v"[..],
        b"detour-routing-key",
        b"detour-routing-key=",
        b"detour-routing-key=  ;p",
        b"detour-routing-key=a b",
        b"detour-routing-key=\"quoted\"",
        b"detour-routing-key=a\\b",
        b"detour routing key=a",
        b"",
        b",,, ,",
    ] {
        assert_eq!(baggage(value), None, "{}", String::from_utf8_lossy(value));
    }
    assert_eq!(
        baggage(b"=v, garbage, ,, k=, detour-routing-key=ok"),
        some("ok")
    );
    // `=` is a baggage octet, so this is well-formed and the value is `v=w`.
    assert_eq!(baggage(b"detour-routing-key=v=w"), some("v=w"));
}

#[test]
fn empty_values_fall_through() {
    assert_eq!(baggage(b"detour-routing-key=, sd-routing-key=x"), some("x"));
    assert_eq!(
        extract(&[h("baggage", b"sd-routing-key="), h("x-sandbox", b"c")]),
        some("c")
    );
    assert_eq!(extract(&[h("x-sandbox", b"")]), None);
    assert_eq!(extract(&[h("x-sandbox", b" \t ")]), None);
}

#[test]
fn several_baggage_headers_are_one_list() {
    let headers = [h("baggage", b"a=1, b=2"), h("baggage", b"sd-routing-key=k")];
    assert_eq!(extract(&headers), some("k"));
    // Name order decides, across fields too.
    let headers = [
        h("baggage", b"sd-workspace=w"),
        h("baggage", b"detour-routing-key=d"),
    ];
    assert_eq!(extract(&headers), some("d"));
    // The same key twice: the first in header order.
    let headers = [
        h("baggage", b"sd-sandbox=first"),
        h("baggage", b"sd-sandbox=second"),
    ];
    assert_eq!(extract(&headers), some("first"));
    let headers = [
        h("baggage", b"sd-sandbox=%zz"),
        h("baggage", b"sd-sandbox=second"),
    ];
    assert_eq!(extract(&headers), some("second"));
}

#[test]
fn within_a_source_the_name_list_order_wins() {
    assert_eq!(
        baggage(b"sd-workspace=w, sd-sandbox=s, detour-routing-key=d"),
        some("d")
    );
    assert_eq!(baggage(b"sd-workspace=w, sd-sandbox=s"), some("s"));
    let reversed = keys(&["sd-workspace", "detour-routing-key"], &[]);
    assert_eq!(
        reversed.from_baggage(b"detour-routing-key=d, sd-workspace=w"),
        some("w")
    );
    assert_eq!(
        reversed.from_tracestate(b"detour-routing-key=d,sd-workspace=w"),
        some("w")
    );
    // The same key twice in one field: the first.
    assert_eq!(baggage(b"sd-sandbox=a, sd-sandbox=b"), some("a"));
    // Propagator headers: name first, then uberctx before ot-baggage.
    let headers = [
        h("ot-baggage-sd-sandbox", b"o2"),
        h("uberctx-sd-sandbox", b"u2"),
        h("ot-baggage-detour-routing-key", b"o0"),
    ];
    assert_eq!(extract(&headers), some("o0"));
    assert_eq!(extract(&headers[..2]), some("u2"));
    // Custom headers: configuration order.
    let custom = keys(&[], &["x-b", "x-a"]);
    assert_eq!(custom.extract([h("x-a", b"a"), h("x-b", b"b")]), some("b"));
}

#[test]
fn sources_rank_baggage_tracestate_propagators_custom() {
    let all = [
        h("x-sandbox", b"custom"),
        h("uberctx-sd-routing-key", b"uber"),
        h("ot-baggage-sd-routing-key", b"ot"),
        h("tracestate", b"sd-routing-key=trace"),
        h("baggage", b"sd-workspace=bag"),
    ];
    assert_eq!(
        extract(&all),
        some("bag"),
        "any baggage name beats tracestate"
    );
    assert_eq!(extract(&all[..4]), some("trace"));
    assert_eq!(extract(&all[..3]), some("uber"));
    assert_eq!(extract(&[all[0], all[2]]), some("ot"));
    assert_eq!(extract(&all[..1]), some("custom"));
    // An invalid value in a higher source does not hide a lower one.
    let headers = [
        h("baggage", b"sd-routing-key=%zz"),
        h("tracestate", b"sd-routing-key=t"),
    ];
    assert_eq!(extract(&headers), some("t"));
}

#[test]
fn tracestate_members() {
    let value = b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,sd-routing-key=abc";
    assert_eq!(extract(&[h("tracestate", value)]), some("abc"));
    assert_eq!(
        extract(&[h("tracestate", b"vendor@sd-routing-key=x")]),
        None
    );
    assert_eq!(
        extract(&[h("tracestate", b"sd-routing-key=a%2Fb")]),
        some("a%2Fb"),
        "verbatim"
    );
    assert_eq!(
        extract(&[h("tracestate", b"sd-routing-key=a=b")]),
        None,
        "= is not allowed"
    );
    assert_eq!(extract(&[h("tracestate", b"sd-routing-key=a b")]), None);
    let headers = [h("tracestate", b"a=1"), h("tracestate", b"sd-sandbox=s")];
    assert_eq!(extract(&headers), some("s"));
}

#[test]
fn uberctx_is_url_decoded_and_ot_baggage_is_verbatim() {
    assert_eq!(
        extract(&[h("uberctx-detour-routing-key", b"team%2Fx")]),
        some("team/x")
    );
    assert_eq!(extract(&[h("uberctx-detour-routing-key", b"%zz")]), None);
    assert_eq!(
        extract(&[h("ot-baggage-sd-sandbox", b"a%2Fb")]),
        some("a%2Fb")
    );
    // Jaeger encodes a space as `+`, so the key is rejected and the next tried.
    let headers = [
        h("uberctx-detour-routing-key", b"a+b"),
        h("ot-baggage-detour-routing-key", b"o"),
    ];
    assert_eq!(extract(&headers), some("o"));
    assert_eq!(
        extract(&[h("uberctx-unknown", b"x"), h("uberctx-", b"x")]),
        None
    );
}

#[test]
fn header_names_and_member_keys_are_case_insensitive() {
    assert_eq!(extract(&[h("BAGGAGE", b"sd-routing-key=a")]), some("a"));
    assert_eq!(extract(&[h("TraceState", b"sd-routing-key=t")]), some("t"));
    assert_eq!(extract(&[h("Uberctx-Detour-Routing-Key", b"u")]), some("u"));
    assert_eq!(extract(&[h("OT-Baggage-SD-Sandbox", b"o")]), some("o"));
    assert_eq!(extract(&[h("X-Sandbox", b"c")]), some("c"));
    assert_eq!(baggage(b"SD-Routing-Key=abc"), some("abc"));
    let upper = keys(&["My-Key"], &["X-Custom"]);
    assert_eq!(upper.names().collect::<Vec<_>>(), ["my-key"]);
    assert_eq!(upper.custom_headers().collect::<Vec<_>>(), ["x-custom"]);
    assert_eq!(upper.from_baggage(b"my-key=1"), some("1"));
    assert_eq!(upper.extract([h("x-custom", b"2")]), some("2"));
}

#[test]
fn custom_headers_take_the_whole_trimmed_value() {
    assert_eq!(
        extract(&[h("x-sandbox", b" feature-x\t")]),
        some("feature-x")
    );
    assert_eq!(extract(&[h("x-sandbox", b"a=b;c")]), some("a=b;c"));
    assert_eq!(extract(&[h("x-sandbox", b"a b")]), None);
    assert_eq!(extract(&[h("x-sandbox", b"a\tb")]), None);
    assert_eq!(extract(&[h("x-sandbox", b"caf\xc3\xa9")]), some("café"));
    assert_eq!(
        extract(&[h("x-sandbox", b""), h("x-sandbox", b"second")]),
        some("second")
    );
    assert_eq!(
        extract(&[h("x-sandbox", b"first"), h("x-sandbox", b"second")]),
        some("first")
    );
}

#[test]
fn non_utf8_bytes_give_no_key() {
    assert_eq!(extract(&[h("x-sandbox", b"\xff\xfe")]), None);
    assert_eq!(extract(&[h("ot-baggage-sd-sandbox", b"a\xc3")]), None);
    assert_eq!(
        baggage(b"detour-routing-key=caf\xc3\xa9"),
        None,
        "raw UTF-8 is not a baggage octet"
    );
    assert_eq!(
        baggage(b"other=\xff\x80, detour-routing-key=ok"),
        some("ok")
    );
    assert_eq!(
        baggage(b"\xff=\xff, detour-routing-key=ok;\xff"),
        some("ok")
    );
    assert_eq!(extract(&[h("tracestate", b"sd-sandbox=\x80")]), None);
}

#[test]
fn long_values_are_bounded() {
    let exact = "k".repeat(MAX_KEY_LEN);
    assert_eq!(
        baggage(format!("detour-routing-key={exact}").as_bytes()),
        Some(exact.clone())
    );
    assert_eq!(
        baggage(format!("detour-routing-key={exact}k").as_bytes()),
        None
    );
    assert_eq!(
        extract(&[h("x-sandbox", format!("{exact}k").as_bytes())]),
        None
    );
    // Escapes count after decoding.
    let encoded = "%2F".repeat(MAX_KEY_LEN);
    assert_eq!(
        baggage(format!("detour-routing-key={encoded}").as_bytes()),
        Some("/".repeat(MAX_KEY_LEN))
    );
    // A huge field with many members and the key at the end is still read.
    let mut big = "filler=0123456789abcdef;prop, ".repeat(4000);
    big.push_str("sd-routing-key=last");
    assert!(big.len() > 100_000);
    assert_eq!(baggage(big.as_bytes()), some("last"));
    let huge_value = format!("sd-routing-key={}", "x".repeat(1 << 20));
    assert_eq!(baggage(huge_value.as_bytes()), None);
}

#[test]
fn no_relevant_headers_no_key() {
    assert_eq!(extract(&[]), None);
    let headers = [
        h("host", b"example.com"),
        h("user-agent", b"curl/8"),
        h("baggag", b"sd-routing-key=x"),
        h("baggage-x", b"sd-routing-key=x"),
        h(
            "traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        h("x-sandboxes", b"x"),
    ];
    assert_eq!(extract(&headers), None);
}

#[test]
fn new_validates_and_normalises() {
    let err = |names: &[&str], custom: &[&str]| {
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let custom: Vec<String> = custom.iter().map(|&c| c.to_owned()).collect();
        RoutingKeys::new(&names, &custom).expect_err("invalid configuration")
    };
    let invalid = |name: &str| RoutingKeyError::InvalidName {
        name: name.to_owned(),
    };
    assert_eq!(err(&[""], &[]), invalid(""));
    assert_eq!(err(&["a b"], &[]), invalid("a b"));
    assert_eq!(err(&["a:b"], &[]), invalid("a:b"));
    assert_eq!(err(&["a=b"], &[]), invalid("a=b"));
    assert_eq!(err(&["ключ"], &[]), invalid("ключ"));
    assert_eq!(
        err(&["ok"], &["x y"]),
        RoutingKeyError::InvalidHeader {
            name: "x y".to_owned()
        }
    );
    for reserved in ["Baggage", "tracestate", "uberctx-a", "OT-Baggage-a"] {
        assert_eq!(
            err(&["ok"], &[reserved]),
            RoutingKeyError::ReservedHeader {
                name: reserved.to_ascii_lowercase()
            }
        );
    }
    assert_eq!(err(&[], &[]), RoutingKeyError::NoSources);
    // Custom headers alone are enough.
    let only_custom = keys(&[], &["x-sandbox"]);
    assert_eq!(
        only_custom.extract([h("baggage", b"sd-routing-key=b"), h("x-sandbox", b"c")]),
        some("c")
    );
    assert_eq!(only_custom.from_baggage(b"sd-routing-key=b"), None);
    // Duplicates, including by case, are dropped.
    let dup = keys(&["a", "B", "A", "b"], &["x-h", "X-H"]);
    assert_eq!(dup.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(dup.custom_headers().collect::<Vec<_>>(), ["x-h"]);
}

/// Deterministic pseudo-random inputs: no panics, and any key returned is valid.
#[test]
fn arbitrary_input_never_panics_and_keys_are_valid() {
    const ALPHABET: &[u8] = b"sd-routing-key=,;% \t+\"\\=2F41zzab\xc3\xa9\xff\x00\x7fdetour";
    let keys = keys(&["sd-routing-key", "a", "detour"], &["x-k"]);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let names = [
        "baggage",
        "tracestate",
        "uberctx-a",
        "ot-baggage-detour",
        "x-k",
        "other",
    ];
    for _ in 0..20_000 {
        let mut values: Vec<Vec<u8>> = Vec::new();
        for _ in 0..(next() % 4) {
            let len = usize::try_from(next() % 48).expect("small length");
            let alphabet_len = u64::try_from(ALPHABET.len()).expect("small alphabet");
            let value = (0..len)
                .map(|_| ALPHABET[usize::try_from(next() % alphabet_len).expect("small index")])
                .collect();
            values.push(value);
        }
        let headers: Vec<Field<'_>> = values
            .iter()
            .map(|value| {
                let name = names[usize::try_from(next() % 6).expect("small index")];
                h(name, value)
            })
            .collect();
        for key in [keys.extract(headers.iter().copied())]
            .into_iter()
            .chain(values.iter().map(|v| keys.from_baggage(v)))
            .chain(values.iter().map(|v| keys.from_tracestate(v)))
            .flatten()
        {
            assert!(is_valid_routing_key(&key), "invalid key {key:?}");
        }
    }
}

#[test]
fn an_inherited_key_travels_as_a_baggage_member_of_the_first_key_name() {
    let keys =
        RoutingKeys::new(&["my-key".into(), "detour-routing-key".into()], &[]).expect("keys");
    assert_eq!(keys.baggage_member("feature-x"), "my-key=feature-x");
    // Outside baggage-octet, and `%` itself, percent-encoded: it reads back.
    let member = keys.baggage_member("a,b;c\\d%e\"f");
    assert_eq!(member, "my-key=a%2Cb%3Bc%5Cd%25e%22f");
    assert_eq!(
        keys.from_baggage(member.as_bytes()).as_deref(),
        Some("a,b;c\\d%e\"f")
    );
}
