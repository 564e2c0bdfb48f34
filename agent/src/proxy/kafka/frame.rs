//! Kafka's framing: every request and every response is a 4-byte
//! big-endian size, then that many bytes. A request begins with its header:
//! API key, API version and correlation id at fixed offsets in every header
//! version, then (header v1 and later) the client id, and (v2) tagged
//! fields. A response begins with the correlation id of its request.
//!
//! A frame is checked before a byte of it goes on: its size within bounds,
//! and, for a request whose API key is known, a header that decodes (with
//! the `kafka-protocol` crate). What fails is a [`FrameError`]: the caller
//! closes the connection rather than pass on bytes it cannot frame.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, RequestHeader},
    protocol::Decodable,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame passed on: the broker's own default limit on a
/// request (`socket.request.max.bytes`, 100 MiB).
pub const MAX_FRAME: usize = 100 * 1024 * 1024;
/// A request's API key, API version and correlation id.
const MIN_REQUEST: usize = 8;
/// A response's correlation id.
const MIN_RESPONSE: usize = 4;

/// Why a connection's bytes are not Kafka frames.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a frame of {0} bytes (the limit is {MAX_FRAME})")]
    TooLarge(usize),
    #[error("a frame of {0} bytes is too short for its header")]
    TooShort(usize),
    #[error("the connection ended inside a frame")]
    Truncated,
    #[error("request header does not decode ({api:?} v{version}): {reason}")]
    Header {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("{0}")]
    Io(String),
}

impl FrameError {
    /// The metric label of the error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "frame_too_large",
            Self::TooShort(_) => "frame_too_short",
            Self::Truncated => "truncated",
            Self::Header { .. } => "malformed_header",
            Self::Io(_) => "io",
        }
    }
}

/// What a request is, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// `None`: an API key this build does not know (passed on as is).
    pub api: Option<ApiKey>,
    pub version: i16,
    pub correlation_id: i32,
}

/// Reads one frame (its size prefix included) from `reader`, using `buf`
/// for bytes read ahead. `Ok(None)`: the connection ended between frames.
pub async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    min: usize,
) -> Result<Option<Bytes>, FrameError> {
    let io = |e: std::io::Error| FrameError::Io(e.to_string());
    while buf.len() < 4 {
        if reader.read_buf(buf).await.map_err(io)? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = usize::try_from(size).map_err(|_| FrameError::TooShort(0))?;
    if size > MAX_FRAME {
        return Err(FrameError::TooLarge(size));
    }
    if size < min {
        return Err(FrameError::TooShort(size));
    }
    buf.reserve((4 + size).saturating_sub(buf.len()));
    while buf.len() < 4 + size {
        if reader.read_buf(buf).await.map_err(io)? == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(Some(buf.split_to(4 + size).freeze()))
}

/// Reads one request frame; see [`read`].
pub async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, FrameError> {
    read(reader, buf, MIN_REQUEST).await
}

/// Reads one response frame; see [`read`].
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, FrameError> {
    read(reader, buf, MIN_RESPONSE).await
}

/// The header of `frame` (a request, size prefix included), checked: a
/// known API key's header must decode at the header version its API
/// version uses.
pub fn request_info(frame: &Bytes) -> Result<RequestInfo, FrameError> {
    let mut body = frame.slice(4..);
    let (key, version) = (body.get_i16(), body.get_i16());
    let correlation_id = body.get_i32();
    let api = ApiKey::try_from(key).ok();
    if let Some(api) = api {
        let header_version = api.request_header_version(version);
        let mut header = frame.slice(4..);
        RequestHeader::decode(&mut header, header_version).map_err(|e| FrameError::Header {
            api,
            version,
            reason: e.to_string(),
        })?;
    }
    Ok(RequestInfo {
        api,
        version,
        correlation_id,
    })
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    /// A request frame: header v2 (flexible), client id `c`, then `body`.
    fn request(key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
        let mut payload = BytesMut::new();
        payload.put_i16(key);
        payload.put_i16(version);
        payload.put_i32(correlation);
        payload.put_i16(1);
        payload.put_slice(b"c");
        payload.put_u8(0); // no tagged fields
        payload.put_slice(body);
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        frame
    }

    async fn read_all(bytes: &[u8]) -> Vec<Result<Option<Bytes>, FrameError>> {
        let mut reader = bytes;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            let next = read_request(&mut reader, &mut buf).await;
            let done = !matches!(next, Ok(Some(_)));
            out.push(next);
            if done {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn frames_are_read_one_by_one_and_their_headers_named() {
        // Metadata v12 (header v2), then an API key this build does not know.
        let mut bytes = request(3, 12, 7, &[0, 0]);
        bytes.extend(request(999, 0, 8, &[]));
        let frames = read_all(&bytes).await;
        assert_eq!(frames.len(), 3, "two frames, then the end");
        let first = frames[0].clone().expect("ok").expect("frame");
        assert_eq!(
            request_info(&first),
            Ok(RequestInfo {
                api: Some(ApiKey::Metadata),
                version: 12,
                correlation_id: 7
            })
        );
        let second = frames[1].clone().expect("ok").expect("frame");
        assert_eq!(request_info(&second).expect("passed on").api, None);
        assert_eq!(frames[2], Ok(None));
    }

    #[tokio::test]
    async fn oversized_short_and_truncated_frames_are_errors() {
        let huge = ((MAX_FRAME + 1) as i32).to_be_bytes();
        assert_eq!(
            read_all(&huge).await[0],
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            read_all(&(-1i32).to_be_bytes()).await[0],
            Err(FrameError::TooShort(0))
        );
        assert_eq!(
            read_all(&[0, 0, 0, 3, 1, 2, 3]).await[0],
            Err(FrameError::TooShort(3))
        );
        let whole = request(3, 12, 7, &[0, 0]);
        assert_eq!(
            read_all(&whole[..whole.len() - 1]).await[0],
            Err(FrameError::Truncated)
        );
        assert_eq!(read_all(&whole[..2]).await[0], Err(FrameError::Truncated));
    }

    #[test]
    fn a_known_request_whose_header_does_not_decode_is_refused() {
        // Metadata v12 with a client id longer than the frame.
        let mut frame = request(3, 12, 7, &[]);
        frame[12] = 0x7f;
        let error = request_info(&Bytes::from(frame)).expect_err("malformed");
        assert_eq!(error.reason(), "malformed_header");
    }
}
