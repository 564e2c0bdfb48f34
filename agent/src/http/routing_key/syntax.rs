//! The syntax of routing-key values: how each source's raw value becomes a
//! key (W3C baggage and tracestate members, Jaeger's encoding, verbatim),
//! the RFC 9110 token and whitespace rules the sources share, and the
//! validation of configured names (which must be tokens).

use super::{
    MAX_KEY_LEN, OT_BAGGAGE_PREFIX, Rank, RoutingKeyError, Source, UBERCTX_PREFIX,
    is_valid_routing_key,
};

/// How a raw value becomes a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// W3C baggage: baggage octets only, `%XX` escapes decoded.
    Baggage,
    /// W3C tracestate: printable ASCII except `,` and `=`, verbatim.
    TraceState,
    /// Jaeger `uberctx-`: `%XX` escapes decoded and `+` is a space.
    Jaeger,
    /// Any bytes, verbatim.
    Verbatim,
}

impl Encoding {
    pub(super) fn list_source(self) -> Option<Source> {
        match self {
            Self::Baggage => Some(Source::Baggage),
            Self::TraceState => Some(Source::TraceState),
            Self::Jaeger | Self::Verbatim => None,
        }
    }

    /// Splits one list member into its key and raw value, or `None` if it is
    /// empty or malformed. Baggage properties are dropped unchecked.
    pub(super) fn split_member(self, member: &[u8]) -> Option<(&[u8], &[u8])> {
        let member = match self {
            Self::Baggage => member.split(|&b| b == b';').next().unwrap_or_default(),
            Self::TraceState | Self::Jaeger | Self::Verbatim => member,
        };
        let eq = member.iter().position(|&b| b == b'=')?;
        let (key, value) = (trim_ows(&member[..eq]), trim_ows(&member[eq + 1..]));
        is_token(key).then_some((key, value))
    }

    /// Decodes `raw` into `buf`, returning the key if it is valid.
    pub(super) fn decode<'b>(self, raw: &[u8], buf: &'b mut [u8; MAX_KEY_LEN]) -> Option<&'b str> {
        let mut len = 0;
        let mut bytes = raw.iter().copied();
        while let Some(b) = bytes.next() {
            let byte = match (self, b) {
                (Self::Baggage, _) if !is_baggage_octet(b) => return None,
                (Self::TraceState, b'!'..=b'~') if b != b'=' => b,
                (Self::TraceState, _) => return None,
                (Self::Baggage | Self::Jaeger, b'%') => {
                    let high = hex_value(bytes.next()?)?;
                    let low = hex_value(bytes.next()?)?;
                    high << 4 | low
                }
                (Self::Jaeger, b'+') => b' ',
                _ => b,
            };
            *buf.get_mut(len)? = byte;
            len += 1;
        }
        let key = std::str::from_utf8(&buf[..len]).ok()?;
        is_valid_routing_key(key).then_some(key)
    }
}

/// A valid key found so far, kept raw: it is decoded again only if it wins.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate<'h> {
    pub(super) rank: Rank,
    pub(super) raw: &'h [u8],
    pub(super) encoding: Encoding,
}

impl Candidate<'_> {
    pub(super) fn decode<'b>(&self, buf: &'b mut [u8; MAX_KEY_LEN]) -> Option<&'b str> {
        self.encoding.decode(self.raw, buf)
    }
}

/// RFC 9110 `token`: one or more `tchar`.
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// W3C baggage `baggage-octet`: printable ASCII except `"`, `,`, `;`, `\`.
pub(super) fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

pub(super) fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Strips RFC 9110 optional whitespace (SP, HTAB) from both ends.
pub(super) fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, tail) = s.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(tail)
}

/// Names as configured: RFC 9110 tokens, lowercased unless they are
/// case-sensitive (query parameters, cookies), duplicates dropped.
pub(super) fn tokens(
    items: &[String],
    case: Case,
    error: impl Fn(String) -> RoutingKeyError,
) -> Result<Vec<Box<str>>, RoutingKeyError> {
    let mut out: Vec<Box<str>> = Vec::with_capacity(items.len());
    for item in items {
        if !is_token(item.as_bytes()) {
            return Err(error(item.clone()));
        }
        let name = match case {
            Case::Insensitive => item.to_ascii_lowercase(),
            Case::Sensitive => item.clone(),
        };
        if !out.iter().any(|seen| **seen == *name) {
            out.push(name.into());
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Case {
    Insensitive,
    Sensitive,
}

pub(super) fn is_reserved_header(name: &[u8]) -> bool {
    name == b"baggage"
        || name == b"tracestate"
        || name.starts_with(UBERCTX_PREFIX)
        || name.starts_with(OT_BAGGAGE_PREFIX)
}
