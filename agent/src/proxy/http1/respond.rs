//! Responses the proxy writes itself. Each says so in a `detour-error` header
//! and closes the connection.

use tokio::io::AsyncWriteExt;

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

    /// The `detour-error` header value (and a metric label).
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

    /// The full response bytes.
    pub fn response(self) -> Vec<u8> {
        let (status, text) = self.status();
        let body = format!("detour: {text} ({})\n", self.reason());
        format!(
            "HTTP/1.1 {status} {text}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\ndetour-error: {}\r\n\r\n{body}",
            body.len(),
            self.reason()
        )
        .into_bytes()
    }
}

/// Writes the response; failures are ignored (the connection closes anyway).
pub async fn send<W: tokio::io::AsyncWrite + Unpin>(client: &mut W, error: ProxyError) {
    let _ = client.write_all(&error.response()).await;
    let _ = client.shutdown().await;
}
