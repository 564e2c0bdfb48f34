//! The header fields that decide framing and connection handling
//! (`Transfer-Encoding`, `Content-Length`, `Connection`, `Expect`,
//! `Upgrade`), read in one pass over a parsed head without allocating.
//!
//! What the values *mean* for a request or a response is decided by the
//! caller in `head.rs`; this module only reports what the fields say,
//! including whether they are invalid and why.

use httparse::Header;

/// What the framing-relevant fields of a head say.
pub(super) struct Fields {
    pub(super) transfer_encoding: Codings,
    pub(super) content_length: Length,
    pub(super) connection: Connection,
    pub(super) expect_continue: bool,
    /// A non-empty `Upgrade` field.
    pub(super) upgrade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codings {
    Absent,
    /// `chunked`, once, last.
    Chunked,
    /// The final coding is not `chunked` (`chunked` may appear once before).
    NotChunked,
    Invalid(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Length {
    Absent,
    Valid(u64),
    Invalid(&'static str),
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Connection {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
}

impl Connection {
    pub(super) fn keep_alive(self, minor_version: u8) -> bool {
        !self.close && (minor_version >= 1 || self.keep_alive)
    }
}

impl Fields {
    pub(super) fn scan(headers: &[Header<'_>]) -> Self {
        let mut fields = Self {
            transfer_encoding: Codings::Absent,
            content_length: Length::Absent,
            connection: Connection::default(),
            expect_continue: false,
            upgrade: false,
        };
        let mut codings = CodingScan::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("transfer-encoding") {
                codings.add(header.value);
            } else if name.eq_ignore_ascii_case("content-length") {
                fields.content_length = merge_length(fields.content_length, header.value);
            } else if name.eq_ignore_ascii_case("connection") {
                for token in list(header.value) {
                    let c = &mut fields.connection;
                    c.close |= token.eq_ignore_ascii_case(b"close");
                    c.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    c.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                fields.expect_continue |=
                    list(header.value).any(|e| e.eq_ignore_ascii_case(b"100-continue"));
            } else if name.eq_ignore_ascii_case("upgrade") {
                fields.upgrade |= list(header.value).any(|p| !p.is_empty());
            }
        }
        fields.transfer_encoding = codings.finish();
        fields
    }
}

/// `Transfer-Encoding` codings across all its fields, in order.
#[derive(Default)]
struct CodingScan {
    present: bool,
    chunked: usize,
    last_is_chunked: bool,
    invalid: Option<&'static str>,
}

impl CodingScan {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list(value) {
            if coding.is_empty() {
                self.invalid = self.invalid.or(Some("empty Transfer-Encoding element"));
            } else if !is_token(coding) {
                self.invalid = self.invalid.or(Some("transfer coding is not a bare token"));
            }
            self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked += usize::from(self.last_is_chunked);
        }
    }

    fn finish(self) -> Codings {
        if !self.present {
            Codings::Absent
        } else if let Some(why) = self.invalid {
            Codings::Invalid(why)
        } else if self.chunked > 1 {
            Codings::Invalid("chunked applied more than once")
        } else if self.last_is_chunked {
            Codings::Chunked
        } else {
            Codings::NotChunked
        }
    }
}

/// Folds one `Content-Length` field value into what earlier ones said.
fn merge_length(so_far: Length, value: &[u8]) -> Length {
    let mut merged = so_far;
    for element in list(value) {
        let Some(n) = parse_decimal(element) else {
            return Length::Invalid("invalid Content-Length");
        };
        merged = match merged {
            Length::Absent => Length::Valid(n),
            Length::Valid(m) if m == n => Length::Valid(n),
            Length::Valid(_) => return Length::Invalid("conflicting Content-Length values"),
            invalid @ Length::Invalid(_) => return invalid,
        };
    }
    merged
}

/// `1*DIGIT` as a `u64`; `None` if empty, not all digits, or too large.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// The elements of a comma-separated field value (`#rule`), with OWS
/// trimmed; empty elements are yielded (as empty slices) for callers to judge.
pub(super) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 `token`: one or more `tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// RFC 9110 `tchar`.
pub(in crate::http) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
