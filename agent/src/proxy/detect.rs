//! Protocol detection on a freshly accepted connection: one bounded read
//! under a timeout (server-first protocols send nothing, so they must not be
//! stalled for long). The HTTP/2 prior-knowledge preface is checked first,
//! then an HTTP/1.x request line; anything else is spliced to baseline.

use std::time::Duration;

use bytes::BytesMut;
use tokio::{io::AsyncReadExt, net::TcpStream};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How much of a request line detection reads before deciding.
const MAX_DETECT_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    H2,
    /// Declared `kafka`: relayed frame by frame.
    Kafka,
    NotHttp,
    /// Nothing (or too little) arrived in time: a server-first protocol, or a
    /// slow client; spliced.
    Timeout,
    /// The client closed before sending anything.
    Closed,
}

/// Reads into `buf` until the protocol is known or `timeout` passes.
pub async fn detect(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> std::io::Result<Detected> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(detected) = classify(buf) {
            return Ok(detected);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Err(_) => {
                return Ok(if buf.is_empty() {
                    Detected::Timeout
                } else {
                    Detected::NotHttp
                });
            }
            Ok(Ok(0)) => {
                return Ok(if buf.is_empty() {
                    Detected::Closed
                } else {
                    Detected::NotHttp
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
        }
    }
}

/// Decides from the bytes so far; `None` means "need more".
pub fn classify(bytes: &[u8]) -> Option<Detected> {
    if bytes.is_empty() {
        return None;
    }
    let preface_len = bytes.len().min(H2_PREFACE.len());
    if bytes[..preface_len] == H2_PREFACE[..preface_len] {
        return (bytes.len() >= H2_PREFACE.len()).then_some(Detected::H2);
    }
    // method SP request-target SP HTTP/1.x CRLF
    let Some(line_end) = bytes.iter().position(|&b| b == b'\n') else {
        let plausible = bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\r');
        return (!plausible || bytes.len() >= MAX_DETECT_BYTES).then_some(Detected::NotHttp);
    };
    let line = &bytes[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    let is_token = |s: &[u8]| {
        !s.is_empty()
            && s.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let http1 = is_token(method) && !target.is_empty() && version.starts_with(b"HTTP/1.");
    Some(if http1 {
        Detected::Http1
    } else {
        Detected::NotHttp
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_request_lines_are_recognised() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Some(Detected::Http1)
        );
        assert_eq!(classify(b"POST /x?y HTTP/1.0\r\n"), Some(Detected::Http1));
        assert_eq!(
            classify(b"GET / HTTP/1.1\n"),
            Some(Detected::Http1),
            "framing errors are the parser's job"
        );
    }

    #[test]
    fn partial_input_waits_for_more() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GET /long/pa"), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
    }

    #[test]
    fn h2_preface_is_recognised() {
        assert_eq!(classify(H2_PREFACE), Some(Detected::H2));
    }

    #[test]
    fn other_protocols_are_not_http() {
        assert_eq!(
            classify(b"\x16\x03\x01\x02\x00"),
            Some(Detected::NotHttp),
            "TLS client hello"
        );
        assert_eq!(
            classify(b"SET key value\r\n"),
            Some(Detected::NotHttp),
            "redis inline"
        );
        assert_eq!(
            classify(b"*1\r\n$4\r\nPING\r\n"),
            Some(Detected::NotHttp),
            "redis RESP"
        );
        assert_eq!(classify(&[b'A'; MAX_DETECT_BYTES]), Some(Detected::NotHttp));
    }
}
