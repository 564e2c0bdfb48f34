//! Routing-key extraction (`docs/routing.md`): which
//! sandbox, if any, a request is for.
//!
//! Extraction reads header fields as `(name, value)` byte pairs ([`Field`]),
//! whatever carried them: the HTTP/1 head parser's field lines, an HTTP/2
//! stream's header map, or the headers given to `detour explain`. So every
//! protocol routes by the same code, and the HTTP/1 parser (a security
//! boundary) does not change when routing does.
//!
//! The proxy calls [`RoutingKeys::extract`] once per request, so it is
//! built for that: one pass over the header names, nothing allocated unless a
//! key is found (the returned `String` is then the only allocation), work
//! linear in the header bytes (which the head parser caps at 64 KiB), and no
//! panics on any input. Routing never rewrites the request; this only reads.
//!
//! # Sources, in order of precedence
//!
//! 1. `baggage` (W3C Baggage): a member whose key is a configured name.
//!    Several `baggage` fields are one list, in order. Values are
//!    percent-decoded; properties (after `;`) are ignored without checking.
//! 2. `tracestate` (W3C Trace Context): a member whose key is a configured
//!    name. Several fields are one list. Values are taken verbatim: the spec
//!    defines no encoding for them.
//! 3. `uberctx-<name>` (Jaeger) and `ot-baggage-<name>` (OpenTracing)
//!    fields. `uberctx-` values are decoded the way Jaeger clients encode
//!    them (`url.QueryEscape`: `%XX` escapes, and `+` is a space, so it yields
//!    a rejected key); `ot-baggage-` values are taken verbatim.
//! 4. Custom fields (`--routing-header`) whose whole value is the key,
//!    trimmed of optional whitespace, taken verbatim.
//!
//! A key from a higher source always wins, wherever its field is in the head.
//!
//! # Decisions
//!
//! - **Priority within a source goes by configuration order**, not header
//!   order: with the names `[a, b]`, `baggage: b=1, a=2` gives `2`. The
//!   operator's `--routing-key-name` order is then the tie-breaker, whatever
//!   order a propagator happens to write members in. In source 3 names rank
//!   first and `uberctx-` comes before `ot-baggage-` for the same name; in
//!   source 4 the `--routing-header` order ranks. Between equal candidates
//!   (the same key twice) the first in header order wins.
//! - **Names match ASCII case-insensitively everywhere.** Each name is also a
//!   header-name suffix (`uberctx-<name>`), and header names are
//!   case-insensitive, so one rule covers every source. W3C baggage keys are
//!   in principle case-sensitive, but a member that differs from a configured
//!   name only in case is in practice a spelling of that name; tracestate
//!   keys are lowercase by definition. [`RoutingKeys::new`] lowercases names.
//! - **Lenient lists, strict members.** A malformed list member (no `=`, an
//!   empty or non-token key, a value outside the W3C character set, a bad
//!   `%` escape) gives no key, and the rest of the list is still read: an
//!   unrelated library's bad member must not switch routing off. Splitting on
//!   `,` is unambiguous (no value may contain one), so leniency cannot make
//!   one member look like another. Empty list members are skipped.
//!   `k=v=w` is well-formed baggage (`=` is a baggage octet): its value is
//!   `v=w`. In tracestate `=` is not allowed in a value, so it is malformed.
//! - **A key must be usable as a metric label and log field**
//!   ([`is_valid_routing_key`]): non-empty, valid UTF-8 after decoding, at
//!   most [`MAX_KEY_LEN`] bytes, no control or whitespace characters.
//!   Anything else (an empty value, `%20`, `%FF`) gives no key from that
//!   member, and the next candidate is tried.
//! - **No cap on member count or header length** beyond the head limit:
//!   the W3C limits (64 members, 8192 bytes) are for propagators, and
//!   truncating a list could cut a value in half. Work stays linear: each
//!   member is split once, compared with the names, and decoded (bounded by
//!   [`MAX_KEY_LEN`]) only when its key matches.
//! - **Configuration**: names and custom header names must be RFC 9110
//!   tokens; duplicates (after lowercasing) are dropped. A custom header may
//!   not be `baggage`, `tracestate` or `uberctx-*` / `ot-baggage-*`: those
//!   have their own syntax above. No names is fine if there are custom
//!   headers; neither is an error, since nothing could ever be routed.
//!
//! 5. and 6. Opt-in, for clients that cannot set headers: a query parameter
//!    and a cookie ([`browser`]).
//!
//! [`RoutingKeys::from_baggage`] and [`RoutingKeys::from_tracestate`] read
//! one field value alone, for fuzz targets and tests.

/// Default key names (W3C baggage / tracestate member keys, and the
/// `uberctx-<name>` / `ot-baggage-<name>` header suffixes). The `sd-` names
/// make detour a drop-in for applications already instrumented for Signadot.
pub const DEFAULT_KEY_NAMES: [&str; 4] = [
    "detour-routing-key",
    "sd-routing-key",
    "sd-sandbox",
    "sd-workspace",
];

/// Longest routing key accepted, in bytes after decoding. Longer values give
/// no key: a routing key becomes a metric label and a log field.
pub const MAX_KEY_LEN: usize = 256;

/// One header field as routing reads it: the name and the value, as bytes
/// received (names in any case).
pub type Field<'h> = (&'h [u8], &'h [u8]);

const UBERCTX_PREFIX: &[u8] = b"uberctx-";
const OT_BAGGAGE_PREFIX: &[u8] = b"ot-baggage-";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingKeyError {
    #[error(
        "routing key name {name:?} is not a valid baggage key / header name (an RFC 9110 token)"
    )]
    InvalidName { name: String },
    #[error("routing header {name:?} is not a valid header name (an RFC 9110 token)")]
    InvalidHeader { name: String },
    #[error("routing header {name:?} has its own syntax; use --routing-key-name instead")]
    ReservedHeader { name: String },
    #[error("routing query parameter {name:?} is not an RFC 9110 token")]
    InvalidParam { name: String },
    #[error("routing cookie {name:?} is not a valid cookie name (an RFC 9110 token)")]
    InvalidCookie { name: String },
    #[error(
        "no routing key names, routing headers, query parameters or cookies: no request could carry a key"
    )]
    NoSources,
}

/// What a baggage value escapes: everything outside `baggage-octet` (W3C
/// Baggage: controls, space, `"`, `,`, `;`, `\\`), and `%` itself.
const BAGGAGE_VALUE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// Where to look for a request's routing key; built once from the agent's
/// options, shared read-only by every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKeys {
    /// Key names, lowercase, in priority order.
    names: Vec<Box<str>>,
    /// Custom header names, lowercase, in priority order.
    custom_headers: Vec<Box<str>>,
    /// Opt-in query parameter and cookie names (sources 5 and 6).
    browser: BrowserSources,
}

impl Default for RoutingKeys {
    /// [`DEFAULT_KEY_NAMES`] and no custom headers.
    fn default() -> Self {
        Self {
            names: DEFAULT_KEY_NAMES.iter().map(|&name| name.into()).collect(),
            custom_headers: Vec::new(),
            browser: BrowserSources::default(),
        }
    }
}

impl RoutingKeys {
    /// `names`: key names (`--routing-key-name`), in priority order;
    /// `custom_headers`: headers whose whole value is the key
    /// (`--routing-header`), in priority order. Both are lowercased and
    /// deduplicated.
    pub fn new(names: &[String], custom_headers: &[String]) -> Result<Self, RoutingKeyError> {
        Self::with_browser_sources(names, custom_headers, &[], &[])
    }

    /// [`RoutingKeys::new`], plus query parameter names
    /// (`--routing-query-param`) and cookie names (`--routing-cookie`),
    /// case-sensitive, in priority order (see [`browser`]).
    pub fn with_browser_sources(
        names: &[String],
        custom_headers: &[String],
        query_params: &[String],
        cookies: &[String],
    ) -> Result<Self, RoutingKeyError> {
        let browser = BrowserSources {
            query_params: tokens(query_params, Case::Sensitive, |name| {
                RoutingKeyError::InvalidParam { name }
            })?,
            cookies: tokens(cookies, Case::Sensitive, |name| {
                RoutingKeyError::InvalidCookie { name }
            })?,
        };
        let names = tokens(names, Case::Insensitive, |name| {
            RoutingKeyError::InvalidName { name }
        })?;
        let custom_headers = tokens(custom_headers, Case::Insensitive, |name| {
            RoutingKeyError::InvalidHeader { name }
        })?;
        if let Some(reserved) = custom_headers
            .iter()
            .find(|header| is_reserved_header(header.as_bytes()))
        {
            return Err(RoutingKeyError::ReservedHeader {
                name: reserved.to_string(),
            });
        }
        if names.is_empty() && custom_headers.is_empty() && browser.is_empty() {
            return Err(RoutingKeyError::NoSources);
        }
        Ok(Self {
            names,
            custom_headers,
            browser,
        })
    }

    /// The key names, lowercase, in priority order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|name| &**name)
    }

    /// The W3C `baggage` list member that carries `key` on a forwarded
    /// request: the first key name, and the key percent-encoded where a
    /// baggage value may not hold it as is.
    pub fn baggage_member(&self, key: &str) -> String {
        let name = self.names.first().map_or("detour-routing-key", |n| &**n);
        format!(
            "{name}={}",
            percent_encoding::utf8_percent_encode(key, BAGGAGE_VALUE_ESCAPES)
        )
    }

    /// The custom header names, lowercase, in priority order.
    pub fn custom_headers(&self) -> impl Iterator<Item = &str> {
        self.custom_headers.iter().map(|header| &**header)
    }

    /// The request's routing key, or `None`. A returned key always passes
    /// [`is_valid_routing_key`].
    pub fn extract<'h>(&self, fields: impl IntoIterator<Item = Field<'h>>) -> Option<String> {
        self.extract_ranked(fields).map(|(key, _)| key)
    }

    /// The request's routing key from its header fields and, when the
    /// browser sources are configured, from its request target (`:path`,
    /// or the request line's target) and cookies. What the proxy calls.
    /// `fields` gives the header fields, as many times as needed.
    pub fn extract_request<'h, I>(
        &self,
        target: Option<&[u8]>,
        fields: impl Fn() -> I,
    ) -> Option<String>
    where
        I: IntoIterator<Item = Field<'h>>,
    {
        let key = self.extract(fields());
        if key.is_some() || self.browser.is_empty() {
            return key;
        }
        self.browser.extract(target, fields()).map(|(key, _)| key)
    }

    /// [`RoutingKeys::extract_request`] with where the key came from, in
    /// words (for `detour explain`), e.g. `baggage member
    /// "detour-routing-key"`.
    pub fn explain_request<'h, I>(
        &self,
        target: Option<&[u8]>,
        fields: impl Fn() -> I,
    ) -> Option<(String, String)>
    where
        I: IntoIterator<Item = Field<'h>>,
    {
        self.explain(fields())
            .or_else(|| self.browser.extract(target, fields()))
    }

    /// The query parameter and cookie names, in priority order.
    pub fn browser_sources(&self) -> &BrowserSources {
        &self.browser
    }

    /// The routing key from header fields and where it came from, in words
    /// (for `detour explain`), e.g. `baggage member "detour-routing-key"`.
    pub fn explain<'h>(
        &self,
        fields: impl IntoIterator<Item = Field<'h>>,
    ) -> Option<(String, String)> {
        let (key, (source, index)) = self.extract_ranked(fields)?;
        let name = |i: usize| self.names.get(i).map_or("?", |n| n.as_ref());
        let origin = match source {
            Source::Baggage => format!("baggage member {:?}", name(index)),
            Source::TraceState => format!("tracestate member {:?}", name(index)),
            Source::Propagator if index % 2 == 0 => format!("header uberctx-{}", name(index / 2)),
            Source::Propagator => format!("header ot-baggage-{}", name(index / 2)),
            Source::Custom => format!(
                "header {}",
                self.custom_headers.get(index).map_or("?", |h| h.as_ref())
            ),
        };
        Some((key, origin))
    }

    fn extract_ranked<'h>(
        &self,
        fields: impl IntoIterator<Item = Field<'h>>,
    ) -> Option<(String, Rank)> {
        let mut scratch = [0; MAX_KEY_LEN];
        let mut best: Option<Candidate<'h>> = None;
        for (name, value) in fields {
            let bound = best.map(|found| found.rank);
            let found = if name.eq_ignore_ascii_case(b"baggage") {
                self.best_member(value, Encoding::Baggage, bound, &mut scratch)
            } else if name.eq_ignore_ascii_case(b"tracestate") {
                self.best_member(value, Encoding::TraceState, bound, &mut scratch)
            } else {
                self.single_value_field(name)
                    .filter(|&(rank, _)| is_better(rank, bound))
                    .map(|(rank, encoding)| Candidate {
                        rank,
                        raw: trim_ows(value),
                        encoding,
                    })
                    .filter(|candidate| candidate.decode(&mut scratch).is_some())
            };
            if let Some(found) = found {
                best = Some(found);
                if found.rank == (Source::Baggage, 0) {
                    break; // Nothing can beat it.
                }
            }
        }
        let best = best?;
        best.decode(&mut scratch)
            .map(|key| (key.to_owned(), best.rank))
    }

    /// The routing key in one `baggage` field value alone.
    pub fn from_baggage(&self, value: &[u8]) -> Option<String> {
        let mut scratch = [0; MAX_KEY_LEN];
        let found = self.best_member(value, Encoding::Baggage, None, &mut scratch)?;
        found.decode(&mut scratch).map(str::to_owned)
    }

    /// The routing key in one `tracestate` field value alone.
    pub fn from_tracestate(&self, value: &[u8]) -> Option<String> {
        let mut scratch = [0; MAX_KEY_LEN];
        let found = self.best_member(value, Encoding::TraceState, None, &mut scratch)?;
        found.decode(&mut scratch).map(str::to_owned)
    }

    /// The best valid member of a `baggage` or `tracestate` list value that
    /// beats `bound`.
    fn best_member<'h>(
        &self,
        value: &'h [u8],
        encoding: Encoding,
        bound: Option<Rank>,
        scratch: &mut [u8; MAX_KEY_LEN],
    ) -> Option<Candidate<'h>> {
        let source = encoding.list_source()?;
        // Only names ranked before `limit` can beat `bound`.
        let mut limit = match bound {
            None => self.names.len(),
            Some((best, index)) if best == source => index,
            Some((best, _)) if best > source => self.names.len(),
            Some(_) => 0,
        };
        let mut found = None;
        for member in value.split(|&b| b == b',') {
            if limit == 0 {
                break;
            }
            let Some((key, raw)) = encoding.split_member(member) else {
                continue;
            };
            let Some(index) = self.names[..limit]
                .iter()
                .position(|name| name.as_bytes().eq_ignore_ascii_case(key))
            else {
                continue;
            };
            let candidate = Candidate {
                rank: (source, index),
                raw,
                encoding,
            };
            if candidate.decode(scratch).is_some() {
                found = Some(candidate);
                limit = index;
            }
        }
        found
    }

    /// The rank and encoding of a field whose whole value is the key
    /// (sources 3 and 4), if `name` is one.
    fn single_value_field(&self, name: &[u8]) -> Option<(Rank, Encoding)> {
        let name_index = |suffix: &[u8]| {
            self.names
                .iter()
                .position(|name| name.as_bytes().eq_ignore_ascii_case(suffix))
        };
        if let Some(suffix) = strip_prefix_ignore_case(name, UBERCTX_PREFIX) {
            Some((
                (Source::Propagator, 2 * name_index(suffix)?),
                Encoding::Jaeger,
            ))
        } else if let Some(suffix) = strip_prefix_ignore_case(name, OT_BAGGAGE_PREFIX) {
            let rank = (Source::Propagator, 2 * name_index(suffix)? + 1);
            Some((rank, Encoding::Verbatim))
        } else {
            let index = self
                .custom_headers
                .iter()
                .position(|custom| custom.as_bytes().eq_ignore_ascii_case(name))?;
            Some(((Source::Custom, index), Encoding::Verbatim))
        }
    }
}

/// Whether `key` may be a routing key: non-empty, at most [`MAX_KEY_LEN`]
/// bytes, and free of control and whitespace characters (it becomes a
/// metric label and a log field).
pub fn is_valid_routing_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && !key.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The header sources of the module docs, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Baggage,
    TraceState,
    /// `uberctx-<name>` and `ot-baggage-<name>`.
    Propagator,
    Custom,
}

/// Source, then position within it (lower is better).
type Rank = (Source, usize);

fn is_better(rank: Rank, bound: Option<Rank>) -> bool {
    bound.is_none_or(|bound| rank < bound)
}

pub mod browser;
mod syntax;
#[cfg(test)]
mod tests;

pub use browser::BrowserSources;
use syntax::{
    Candidate, Case, Encoding, is_reserved_header, strip_prefix_ignore_case, tokens, trim_ows,
};
