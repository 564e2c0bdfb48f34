//! Request and response heads: parsing with `httparse` and the strict RFC 9112
//! framing rules of `docs/routing.md` ("HTTP/1.1 behaviour").
//!
//! The proxy forwards every head byte for byte (but for one narrow case,
//! `Connection: close` left out of an HTTP/1.1 request: see [`hop`]), so the
//! one thing this module must get right is agreeing with *any*
//! RFC-conforming upstream on where a message ends. A disagreement would let
//! one request smuggle into another sandbox's route, so whatever two parsers
//! could read differently is refused (400 for a client, a bad upstream for a
//! response) rather than repaired.
//!
//! Decisions:
//! - Syntax: `httparse` with every leniency off (no obs-fold, no whitespace
//!   between a field name and its colon, single spaces in the start line, no
//!   skipping of invalid fields). `httparse` accepts a bare LF as a line end;
//!   we do not: every LF in a head must follow a CR and every CR precede an LF.
//!   Empty lines before the start line are tolerated (RFC 9112 §2.2).
//! - Size: only the first [`MAX_HEAD_BYTES`] of the buffer are parsed, so a
//!   head that does not end within them is [`HeadError::TooLarge`].
//! - `Transfer-Encoding`: the codings of all its fields, in order, must each
//!   be a bare token (no parameters: a quoted parameter could hide a comma from
//!   a naive splitter) and no list element may be empty. `chunked` at most
//!   once. With `Content-Length` as well, or in HTTP/1.0 (RFC 9112 §6.1:
//!   faulty framing), a request or a response is refused. A request needs
//!   `chunked` last; a response whose final coding is not `chunked` runs until
//!   close (RFC 9112 §6.3), and then its connection is never reused.
//! - `Content-Length`: each list element `1*DIGIT` fitting a `u64` (leading
//!   zeros allowed, as the grammar does); repeated or listed values must be
//!   numerically equal.
//! - No body, whatever the fields say: responses to HEAD, 1xx, 204, 304, and
//!   2xx to CONNECT (RFC 9112 §6.3). A 204 that carries `Transfer-Encoding` or
//!   a non-zero `Content-Length` keeps that meaning but makes the upstream
//!   connection not reusable: its server disagrees with us about framing.
//! - `Expect: 100-continue` and `Upgrade` count in HTTP/1.1 only (RFC 9110
//!   §10.1.1 and §7.8 say to ignore them in HTTP/1.0); CONNECT is an upgrade in
//!   either version.
//! - A status code below 100 is malformed; responses otherwise reuse the
//!   request's checks, and the proxy answers their errors with 502.
//! - Parsing allocates nothing. It knows nothing of routing: a parsed request
//!   hands its field lines to the caller ([`ParsedRequest::fields`]), which
//!   reads the routing key from them (`RoutingKeys::extract`).

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

use self::fields::{Codings, Fields, Length};
pub use self::hop::Stripped;
use super::routing_key::Field;

mod fields;
pub mod hop;

pub(super) use self::fields::is_tchar;

/// Largest request or response head accepted (request: 431 beyond it).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one head (request: 431 beyond it).
pub const MAX_HEADERS: usize = 128;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: ..., chunked`: see [`super::chunked::ChunkedDecoder`].
    Chunked,
    /// Responses only: the body runs until the upstream closes.
    UntilClose,
}

/// Request methods the proxy treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Connect,
    Patch,
    Other,
}

impl Method {
    /// RFC 9110 idempotent methods: safe to retry on a stale pooled connection.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Self::Get | Self::Head | Self::Put | Self::Delete | Self::Options | Self::Trace
        )
    }

    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is [`Method::Other`].
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            "TRACE" => Self::Trace,
            "CONNECT" => Self::Connect,
            "PATCH" => Self::Patch,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Length of the head in bytes, including the final empty line.
    pub len: usize,
    pub method: Method,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub framing: Framing,
    /// Whether the client lets the connection live after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An upgrade request (`Connection: upgrade` + `Upgrade`), or CONNECT.
    pub upgrade: bool,
    /// `Connection: close` lines the proxy does not forward ([`hop`]).
    pub stripped: Stripped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub minor_version: u8,
    pub framing: Framing,
    /// Whether the upstream connection may be reused after this response.
    pub keep_alive: bool,
    /// The `close` connection option is present.
    pub close: bool,
}

/// Why a head was refused. `status()` is what the proxy answers a client with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    #[error("ambiguous message framing: {0}")]
    Framing(&'static str),
}

impl HeadError {
    /// 431 for size limits, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge | Self::TooManyHeaders => 431,
            Self::Malformed(_) | Self::Framing(_) => 400,
        }
    }
}

/// Room for a request head's field lines: [`parse_request`] fills it, and
/// the caller reads them through [`ParsedRequest::fields`]. It lives on the
/// caller's stack; nothing is allocated.
pub struct FieldLines<'b>([MaybeUninit<Header<'b>>; MAX_HEADERS]);

impl Default for FieldLines<'_> {
    fn default() -> Self {
        Self([const { MaybeUninit::uninit() }; MAX_HEADERS])
    }
}

/// A complete request head, and its field lines in `buf`.
#[derive(Debug)]
pub struct ParsedRequest<'s, 'b> {
    pub head: RequestHead,
    /// The request target (`/path?query`), as received.
    pub target: &'b [u8],
    fields: &'s [Header<'b>],
}

impl<'b> ParsedRequest<'_, 'b> {
    /// The field lines as `(name, value)`, in order, as received.
    pub fn fields(&self) -> impl Iterator<Item = Field<'b>> + '_ {
        self.fields
            .iter()
            .map(|field| (field.name.as_bytes(), field.value))
    }
}

/// Parses a request head at the start of `buf`, its field lines into
/// `lines`. `Ok(None)`: incomplete, read more (but `Err(TooLarge)` once
/// `buf` holds `MAX_HEAD_BYTES` without an end).
pub fn parse_request<'s, 'b>(
    buf: &'b [u8],
    lines: &'s mut FieldLines<'b>,
) -> Result<Option<ParsedRequest<'s, 'b>>, HeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut request = httparse::Request::new(&mut []);
    let parsed =
        strict_config().parse_request_with_uninit_headers(&mut request, window, &mut lines.0);
    let Some(len) = complete(parsed, buf.len())? else {
        return Ok(None);
    };
    check_line_ends(&window[..len])?;
    let (Some(token), Some(minor_version), Some(target)) =
        (request.method, request.version, request.path)
    else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let method = Method::from_token(token);
    let headers: &'s [Header<'b>] = request.headers;
    let fields = Fields::scan(headers);

    let framing = body_framing(&fields, minor_version, Role::Request)?;
    let http11 = minor_version == 1;
    let stripped =
        if http11 && method != Method::Connect && !fields.upgrade && fields.connection.close {
            hop::connection_close(window, headers)
        } else {
            Stripped::default()
        };
    let head = RequestHead {
        len,
        method,
        minor_version,
        framing,
        keep_alive: fields.connection.keep_alive(minor_version),
        expect_continue: http11 && fields.expect_continue,
        upgrade: method == Method::Connect
            || (http11 && fields.upgrade && fields.connection.upgrade),
        stripped,
    };
    Ok(Some(ParsedRequest {
        head,
        target: target.as_bytes(),
        fields: headers,
    }))
}

/// Parses a response head at the start of `buf`, for a request with
/// `method` (a HEAD request's response has no body).
pub fn parse_response(buf: &[u8], method: Method) -> Result<Option<ResponseHead>, HeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut storage = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        strict_config().parse_response_with_uninit_headers(&mut response, window, &mut storage);
    let Some(len) = complete(parsed, buf.len())? else {
        return Ok(None);
    };
    check_line_ends(&window[..len])?;
    let (Some(status), Some(minor_version)) = (response.code, response.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    if status < 100 {
        return Err(HeadError::Malformed("status code below 100"));
    }
    let fields = Fields::scan(response.headers);
    let mut keep_alive = fields.connection.keep_alive(minor_version);

    let no_body = method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (method == Method::Connect && (200..300).contains(&status));
    let framing = if no_body {
        if status == 204
            && (fields.transfer_encoding != Codings::Absent
                || !matches!(fields.content_length, Length::Absent | Length::Valid(0)))
        {
            keep_alive = false;
        }
        Framing::Empty
    } else {
        body_framing(&fields, minor_version, Role::Response)?
    };
    Ok(Some(ResponseHead {
        len,
        status,
        minor_version,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
        close: fields.connection.close,
    }))
}

/// Which side sent a message: the framing rules differ only where a
/// request cannot be delimited by close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Request,
    Response,
}

/// The body framing of a message that has one (RFC 9112 §6): the one table
/// of `Transfer-Encoding` and `Content-Length` for requests and responses.
fn body_framing(fields: &Fields, minor_version: u8, role: Role) -> Result<Framing, HeadError> {
    let framing = match (fields.transfer_encoding, fields.content_length) {
        (Codings::Absent, Length::Absent) if role == Role::Request => Framing::Empty,
        (Codings::Absent, Length::Absent) => Framing::UntilClose,
        (Codings::Absent, Length::Valid(n)) => Framing::Length(n),
        (Codings::Absent, Length::Invalid(why)) => return Err(HeadError::Framing(why)),
        (_, Length::Valid(_) | Length::Invalid(_)) => {
            return Err(HeadError::Framing(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        _ if minor_version == 0 => return Err(HeadError::Framing("Transfer-Encoding in HTTP/1.0")),
        (Codings::Chunked, Length::Absent) => Framing::Chunked,
        // A response whose final coding is not chunked runs until close; a
        // request cannot.
        (Codings::NotChunked, Length::Absent) if role == Role::Response => Framing::UntilClose,
        (Codings::NotChunked, Length::Absent) => {
            return Err(HeadError::Framing(
                "Transfer-Encoding does not end in chunked",
            ));
        }
        (Codings::Invalid(why), Length::Absent) => return Err(HeadError::Framing(why)),
    };
    Ok(framing)
}

/// `httparse` with every leniency spelled out as off.
fn strict_config() -> ParserConfig {
    let mut config = ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(false)
        .allow_obsolete_multiline_headers_in_responses(false)
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .allow_multiple_spaces_in_response_status_delimiters(false)
        .allow_space_before_first_header_name(false)
        .ignore_invalid_headers_in_requests(false)
        .ignore_invalid_headers_in_responses(false);
    config
}

/// The head's length once complete; `None` while more may come.
fn complete(parsed: httparse::Result<usize>, buffered: usize) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(Status::Complete(len)) => Ok(Some(len)),
        Ok(Status::Partial) if buffered >= MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(Status::Partial) => Ok(None),
        Err(error) => Err(match error {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid status line"),
            httparse::Error::Token => HeadError::Malformed("invalid request line"),
            httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        }),
    }
}

/// Every line of the head ends in CRLF: no bare LF, no lone CR.
fn check_line_ends(head: &[u8]) -> Result<(), HeadError> {
    let mut previous = 0u8;
    for &byte in head {
        if (byte == b'\n') != (previous == b'\r') {
            return Err(HeadError::Malformed("line not ended by CRLF"));
        }
        previous = byte;
    }
    if previous == b'\r' {
        return Err(HeadError::Malformed("line not ended by CRLF"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
