//! The proxy's own answers: why the proxy, not an upstream, responded, and
//! how each protocol says it.
//!
//! One type for every protocol. HTTP/1 writes [`ProxyError::http1_response`]
//! and closes the connection. HTTP/2 answers the one stream with
//! [`ProxyError::h2_response`]: for a gRPC request, a trailers-only response
//! carrying a gRPC status (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`),
//! otherwise the same status code as HTTP/1. Every answer names its reason in
//! a `detour-error` header, so a client can tell the proxy's answers from an
//! upstream's.

use hyper::{
    StatusCode,
    header::{CONTENT_TYPE, HeaderValue},
    http::response::Builder,
};

use super::upstream::UpstreamError;

/// The header naming the reason of a response the proxy wrote itself.
pub const DETOUR_ERROR: &str = "detour-error";

/// Why the proxy answered instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    BadRequest(&'static str),
    HeadTooLarge,
    HeadTimeout,
    UpstreamConnect,
    UpstreamTimeout,
    BadUpstreamResponse,
}

/// gRPC status codes the proxy answers with (the gRPC spec's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcStatus {
    DeadlineExceeded = 4,
    ResourceExhausted = 8,
    Internal = 13,
    Unavailable = 14,
}

impl ProxyError {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Self::BadRequest(_) => (400, "Bad Request"),
            Self::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Self::HeadTimeout => (408, "Request Timeout"),
            Self::UpstreamConnect | Self::BadUpstreamResponse => (502, "Bad Gateway"),
            Self::UpstreamTimeout => (504, "Gateway Timeout"),
        }
    }

    /// The `detour-error` header value.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadRequest(reason) => reason,
            Self::HeadTooLarge => "head-too-large",
            Self::HeadTimeout => "head-timeout",
            Self::UpstreamConnect => "upstream-connect",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::BadUpstreamResponse => "bad-upstream-response",
        }
    }

    /// The `reason` label of `detour_request_errors_total` or
    /// `detour_upstream_errors_total`.
    pub fn metric_reason(self) -> &'static str {
        match self {
            Self::BadRequest("bad-framing") => "bad_framing",
            Self::BadRequest("malformed-head") => "malformed_head",
            Self::BadRequest("bad-chunked-body") => "bad_chunked_body",
            Self::BadRequest(_) => "bad_request",
            Self::HeadTooLarge => "head_too_large",
            Self::HeadTimeout => "head_timeout",
            Self::UpstreamConnect => "connect",
            Self::UpstreamTimeout => "timeout",
            Self::BadUpstreamResponse => "bad_response",
        }
    }

    /// Whether the client is at fault (4xx), not an upstream (5xx).
    pub fn is_client_error(self) -> bool {
        self.status().0 < 500
    }

    /// The status a gRPC client gets.
    pub fn grpc_status(self) -> GrpcStatus {
        match self {
            Self::UpstreamConnect => GrpcStatus::Unavailable,
            Self::UpstreamTimeout | Self::HeadTimeout => GrpcStatus::DeadlineExceeded,
            Self::HeadTooLarge => GrpcStatus::ResourceExhausted,
            Self::BadRequest(_) | Self::BadUpstreamResponse => GrpcStatus::Internal,
        }
    }

    /// The HTTP/1.1 encoding: a whole response that closes the connection.
    pub fn http1_response(self) -> Vec<u8> {
        let (status, text) = self.status();
        let body = self.body();
        format!(
            "HTTP/1.1 {status} {text}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n{DETOUR_ERROR}: {}\r\n\r\n{body}",
            body.len(),
            self.reason()
        )
        .into_bytes()
    }

    /// The HTTP/2 encoding, for one stream: a gRPC trailers-only response
    /// (status 200, `grpc-status`, `grpc-message`, no body) when `grpc`,
    /// else the HTTP/1 status with a short text body. Returns the head and
    /// the body.
    pub fn h2_response(self, grpc: bool) -> (hyper::http::Response<()>, String) {
        let builder = Builder::new().header(DETOUR_ERROR, HeaderValue::from_static(self.reason()));
        let (builder, body) = if grpc {
            let code = self.grpc_status() as u16;
            (
                builder
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, "application/grpc")
                    .header("grpc-status", HeaderValue::from(code))
                    .header("grpc-message", grpc_message(self)),
                String::new(),
            )
        } else {
            let status = StatusCode::from_u16(self.status().0).unwrap_or(StatusCode::BAD_GATEWAY);
            (
                builder.status(status).header(CONTENT_TYPE, "text/plain"),
                self.body(),
            )
        };
        let response = builder
            .body(())
            .unwrap_or_else(|_| hyper::http::Response::new(()));
        (response, body)
    }

    fn body(self) -> String {
        format!("detour: {} ({})\n", self.status().1, self.reason())
    }
}

/// `grpc-message`: percent-encoded text (the gRPC spec); ours is ASCII
/// without `%`, so it goes as it is.
fn grpc_message(error: ProxyError) -> HeaderValue {
    HeaderValue::from_static(match error {
        ProxyError::UpstreamConnect => "detour: upstream unavailable (upstream-connect)",
        ProxyError::UpstreamTimeout => "detour: upstream timed out (upstream-timeout)",
        ProxyError::BadUpstreamResponse => "detour: bad upstream response",
        ProxyError::HeadTooLarge => "detour: header block too large",
        ProxyError::HeadTimeout => "detour: request head timed out",
        ProxyError::BadRequest(_) => "detour: bad request",
    })
}

impl From<UpstreamError> for ProxyError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Timeout(_) => Self::UpstreamTimeout,
            UpstreamError::Socket(_) | UpstreamError::Connect(_) => Self::UpstreamConnect,
        }
    }
}

#[cfg(test)]
mod tests;
