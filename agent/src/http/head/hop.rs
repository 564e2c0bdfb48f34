//! `Connection: close` is hop-by-hop: the one request rewrite the proxy makes.
//!
//! A client that opens a connection per request (curl, scripts, load
//! generators) sends `Connection: close` on each. Forwarded as received, it
//! makes the upstream close as well, so every request would pay for a new
//! upstream connection. But `Connection` is hop-by-hop (RFC 9110 §7.6.1): its
//! options are about the client's connection to the proxy, and a proxy must
//! not forward them. So the proxy leaves those lines out: the client's
//! connection still closes after its response, and the upstream connection
//! can be reused.
//!
//! The rule is deliberately narrow; every request outside it, and every other
//! byte of a request inside it, is forwarded as received:
//! - HTTP/1.1 only: an HTTP/1.0 request's connection handling (with its
//!   `keep-alive` option) stays between the client and the upstream;
//! - not CONNECT and no `Upgrade` field: nothing about an upgrade is touched;
//! - every `Connection` field's value is the single token `close` (any case,
//!   whitespace around it allowed). A field listing other options
//!   (`close, x-foo`) names further hop-by-hop fields that would then have to
//!   go too (RFC 9110 §7.6.1); rather than rewrite more, such a request goes
//!   unchanged, as do `close, close` and lists with empty elements;
//! - at most [`MAX_LINES`] `Connection` fields.

use std::{iter, ops::Range};

use httparse::Header;

use super::fields::list;

/// Most `Connection: close` lines left out of one head; a head with more
/// `Connection` fields is forwarded unchanged.
pub const MAX_LINES: usize = 4;

/// Whole lines of a request head (CRLF included), by byte offset from the
/// start of the buffer it was parsed from, that the proxy does not forward.
/// Empty: the head goes as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stripped {
    lines: [Range<usize>; MAX_LINES],
    count: usize,
}

impl Stripped {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The left-out lines, in order.
    pub fn lines(&self) -> &[Range<usize>] {
        &self.lines[..self.count]
    }

    /// The pieces of `bytes` that are forwarded, in order: everything but the
    /// left-out lines. `bytes` starts with the head these lines were found in
    /// (and may hold more after it, such as the start of a body).
    pub fn kept<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let starts = iter::once(0).chain(self.lines().iter().map(|line| line.end));
        let ends = self
            .lines()
            .iter()
            .map(|line| line.start)
            .chain(iter::once(bytes.len()));
        starts
            .zip(ends)
            .map(|(start, end)| bytes.get(start..end).unwrap_or_default())
    }
}

/// The `Connection: close` lines to leave out of a request head parsed from
/// `buf` into `headers`, for a request the rule may apply to (HTTP/1.1, not
/// CONNECT, no `Upgrade`: the caller checks). Empty unless every `Connection`
/// field is exactly `close`.
pub(super) fn connection_close(buf: &[u8], headers: &[Header<'_>]) -> Stripped {
    let mut stripped = Stripped::default();
    for header in headers {
        if !header.name.eq_ignore_ascii_case("connection") {
            continue;
        }
        let mut options = list(header.value);
        let only_close = options
            .next()
            .is_some_and(|option| option.eq_ignore_ascii_case(b"close"))
            && options.next().is_none();
        if !only_close || stripped.count == MAX_LINES {
            return Stripped::default();
        }
        let Some(line) = line_of(buf, header) else {
            return Stripped::default();
        };
        stripped.lines[stripped.count] = line;
        stripped.count += 1;
    }
    stripped
}

/// The byte range of `header`'s whole line in `buf`, which `httparse` parsed
/// it from: from its name (a field line has no leading whitespace, and
/// obs-fold is refused) through the LF that ends its value.
fn line_of(buf: &[u8], header: &Header<'_>) -> Option<Range<usize>> {
    let base = buf.as_ptr().addr();
    let start = header.name.as_ptr().addr().checked_sub(base)?;
    let value_end = header
        .value
        .as_ptr()
        .addr()
        .checked_add(header.value.len())?
        .checked_sub(base)?;
    let newline = buf.get(value_end..)?.iter().position(|&b| b == b'\n')?;
    let end = value_end + newline + 1;
    buf.get(start..end)?
        .starts_with(header.name.as_bytes())
        .then_some(start..end)
}

#[cfg(test)]
mod tests;
