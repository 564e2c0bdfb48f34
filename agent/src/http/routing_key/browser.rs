//! Opt-in routing-key sources for clients that cannot set headers
//! (browsers following a link, WebSockets): a query parameter of the
//! request target (`--routing-query-param`) and a cookie
//! (`--routing-cookie`).
//!
//! Decisions:
//! - **They rank after every header source**, query parameter first: a key a
//!   propagator put in a header is the request's own; a query parameter is
//!   the user's explicit choice for this request; a cookie is the stickiest
//!   and so the weakest.
//! - **Names are case-sensitive** (query parameters and cookie names are),
//!   must be RFC 9110 tokens, and rank in configuration order; between equal
//!   names, the first occurrence wins.
//! - **Query values are `application/x-www-form-urlencoded`** (`%XX`, `+` is
//!   a space, so yields a rejected key), as browsers encode forms and links.
//!   Only the query of the request target counts (after the first `?`, up to
//!   a `#`).
//! - **Cookie values are taken verbatim** (RFC 6265 defines no encoding),
//!   without the optional surrounding double quotes. Every `cookie` field
//!   is read (HTTP/2 may split cookies into several fields, RFC 9113
//!   §8.2.3).
//! - A value must pass `is_valid_routing_key`, else the next candidate is
//!   tried.

use super::{Field, is_valid_routing_key};

/// Where browser-style keys are looked up; empty lists switch a source off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserSources {
    /// Query parameter names, in priority order.
    pub query_params: Vec<Box<str>>,
    /// Cookie names, in priority order.
    pub cookies: Vec<Box<str>>,
}

impl BrowserSources {
    pub fn is_empty(&self) -> bool {
        self.query_params.is_empty() && self.cookies.is_empty()
    }

    /// The key from the query of `target`, then from the cookies in
    /// `fields`, with the source in words.
    pub fn extract<'h>(
        &self,
        target: Option<&[u8]>,
        fields: impl IntoIterator<Item = Field<'h>>,
    ) -> Option<(String, String)> {
        if let Some(found) = target.and_then(|target| self.in_query(target)) {
            return Some(found);
        }
        if self.cookies.is_empty() {
            return None;
        }
        let mut best: Option<(usize, String)> = None;
        for (name, value) in fields {
            if !name.eq_ignore_ascii_case(b"cookie") {
                continue;
            }
            for pair in value.split(|&b| b == b';') {
                let Some((cookie, value)) = split_pair(pair) else {
                    continue;
                };
                let Some(rank) = self.cookies.iter().position(|c| c.as_bytes() == cookie) else {
                    continue;
                };
                if best.as_ref().is_some_and(|(best, _)| *best <= rank) {
                    continue;
                }
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                if let Some(key) = std::str::from_utf8(value)
                    .ok()
                    .filter(|key| is_valid_routing_key(key))
                {
                    best = Some((rank, key.to_owned()));
                }
            }
        }
        best.map(|(rank, key)| (key, format!("cookie {:?}", &*self.cookies[rank])))
    }

    fn in_query(&self, target: &[u8]) -> Option<(String, String)> {
        if self.query_params.is_empty() {
            return None;
        }
        let target = target
            .iter()
            .position(|&b| b == b'#')
            .map_or(target, |end| &target[..end]);
        let query = &target[target.iter().position(|&b| b == b'?')? + 1..];
        let mut best: Option<(usize, String)> = None;
        for (name, value) in form_urlencoded::parse(query) {
            let Some(rank) = self.query_params.iter().position(|p| **p == *name) else {
                continue;
            };
            if best.as_ref().is_some_and(|(best, _)| *best <= rank) {
                continue;
            }
            if is_valid_routing_key(&value) {
                best = Some((rank, value.into_owned()));
            }
        }
        best.map(|(rank, key)| {
            (
                key,
                format!("query parameter {:?}", &*self.query_params[rank]),
            )
        })
    }
}

/// `name=value` with optional whitespace around both.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some((
        super::trim_ows(&pair[..eq]),
        super::trim_ows(&pair[eq + 1..]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> BrowserSources {
        BrowserSources {
            query_params: vec!["sandbox".into(), "sd".into()],
            cookies: vec!["sandbox".into(), "sd".into()],
        }
    }

    fn key(target: &str, cookies: &[&str]) -> Option<String> {
        let fields = cookies.iter().map(|c| (&b"cookie"[..], c.as_bytes()));
        sources()
            .extract(Some(target.as_bytes()), fields)
            .map(|(key, _)| key)
    }

    #[test]
    fn a_query_parameter_gives_the_key_decoded() {
        assert_eq!(
            key("/a?x=1&sandbox=feature-x", &[]).as_deref(),
            Some("feature-x")
        );
        assert_eq!(
            key("/a?sandbox=feat%2Dy#frag", &[]).as_deref(),
            Some("feat-y")
        );
        assert_eq!(
            key("/a?sd=b&sandbox=a", &[]).as_deref(),
            Some("a"),
            "configuration order"
        );
        assert_eq!(key("/a?sandbox=a+b", &[]), None, "a space is no key");
        assert_eq!(
            key("/a#?sandbox=a", &[]),
            None,
            "a fragment is not the query"
        );
        assert_eq!(key("/a?Sandbox=a", &[]), None, "names are case-sensitive");
    }

    #[test]
    fn a_cookie_gives_the_key_verbatim_after_the_query() {
        assert_eq!(
            key("/", &["a=1; sandbox=feature-x"]).as_deref(),
            Some("feature-x")
        );
        assert_eq!(key("/", &["sandbox=\"quoted\""]).as_deref(), Some("quoted"));
        assert_eq!(
            key("/", &["sd=b", "sandbox=a"]).as_deref(),
            Some("a"),
            "split cookie fields"
        );
        assert_eq!(
            key("/?sd=q", &["sandbox=c"]).as_deref(),
            Some("q"),
            "query first"
        );
        assert_eq!(key("/", &["sandbox="]), None);
    }

    #[test]
    fn the_source_is_named_for_explain() {
        let found = sources().extract(Some(b"/?sd=k"), std::iter::empty());
        assert_eq!(
            found,
            Some(("k".to_owned(), "query parameter \"sd\"".to_owned()))
        );
        let found = sources().extract(None, [(&b"Cookie"[..], &b"sandbox=k"[..])]);
        assert_eq!(
            found,
            Some(("k".to_owned(), "cookie \"sandbox\"".to_owned()))
        );
    }
}
