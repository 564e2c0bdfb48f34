//! Chunked transfer coding (RFC 9112 §7.1), validated incrementally while the
//! bytes are forwarded verbatim.
//!
//! The proxy never re-encodes a body: it forwards exactly the bytes that
//! [`ChunkedDecoder::feed`] reports as consumed. The decoder's job is to find
//! the end of the body the way every conforming upstream would, and to refuse
//! anything two parsers could read differently (the "chunk extension" and
//! "bare LF" smuggling families), so a request can never run into the next.
//!
//! Decisions:
//! - Strict grammar. A size line is `1*HEXDIG`, then optional extensions
//!   (`*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`), then
//!   CRLF. No whitespace before the size, none after it unless a `;` follows,
//!   no bare LF or lone CR anywhere, chunk data followed by exactly CRLF.
//! - Chunk sizes above `i64::MAX` are refused: no legitimate body is that big,
//!   and an upstream that keeps sizes in a signed 64-bit integer must never
//!   see one it would read as negative.
//! - Trailer fields are `token ":" *( field-vchar / SP / HTAB )` lines ending
//!   in CRLF; no obs-fold, no whitespace before the colon.
//! - Bounds: a size line (with its CRLF) of at most [`MAX_CHUNK_LINE`] bytes,
//!   a trailer section (with the final CRLF) of at most [`MAX_TRAILERS`].
//! - Chunk data is skipped arithmetically, so a large chunk costs O(1) per
//!   `feed`, whatever its size; only size lines and trailers go byte by byte.

use super::head::is_tchar;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
pub const MAX_TRAILERS: usize = 64 * 1024;

/// Largest chunk size accepted (see the module docs).
const MAX_CHUNK_SIZE: u64 = i64::MAX as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size line too long")]
    LineTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("malformed trailer section")]
    BadTrailer,
    #[error("trailer section too large")]
    TrailersTooLarge,
}

/// How far [`ChunkedDecoder::feed`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to this body (forward them as they are).
    pub consumed: usize,
    /// The body (last chunk and trailers) is complete.
    pub done: bool,
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Chunk-size digits (at least one before anything else).
    #[default]
    Size,
    /// Whitespace after the size: only a `;` may follow.
    SizeBws,
    /// After `;`: optional whitespace, then an extension name.
    ExtName,
    /// Inside an extension name.
    InExtName,
    /// Whitespace after an extension name: `=` or `;` may follow.
    AfterExtName,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtValue,
    /// Inside a token value.
    InExtToken,
    /// Inside a quoted-string value.
    InExtQuoted,
    /// After a `\` in a quoted string.
    ExtEscape,
    /// After a complete value: whitespace or `;` or CR.
    AfterExtValue,
    /// Whitespace after a value: only a `;` may follow.
    AfterExtValueBws,
    /// CR of the size line seen; LF must follow.
    SizeLf,
    /// `remaining` bytes of chunk data to go.
    Data,
    /// Chunk data done; CR must follow.
    DataCr,
    /// CR after chunk data seen; LF must follow.
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// CR of a trailer line seen; LF must follow.
    TrailerLf,
    /// CR of the final line seen; LF must follow.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Incremental validator of one chunked body.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size being read, then the data bytes still to come.
    remaining: u64,
    /// Bytes of the current size line so far.
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
    /// A complete, valid chunk-size line has been seen.
    size_line_seen: bool,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether at least one complete chunk-size line has been validated (the
    /// proxy holds a request head back until then).
    pub fn size_line_seen(&self) -> bool {
        self.size_line_seen
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes a prefix of `input`; never consumes bytes past the end of the body.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let available = (input.len() - pos) as u64;
                    let take = self.remaining.min(available);
                    // `take <= available`, which came from a `usize`.
                    pos += take as usize;
                    self.remaining -= take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    self.step(input[pos])?;
                    pos += 1;
                }
            }
        }
        Ok(Progress {
            consumed: pos,
            done: self.is_done(),
        })
    }

    /// One byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        match self.state {
            Size | SizeBws | ExtName | InExtName | AfterExtName | ExtValue | InExtToken
            | InExtQuoted | ExtEscape | AfterExtValue | AfterExtValueBws | SizeLf => {
                self.line_len += 1;
                if self.line_len > MAX_CHUNK_LINE {
                    return Err(ChunkError::LineTooLong);
                }
                self.state = self.size_line(b)?;
                // Data and TrailerStart are entered only at the end of a size line.
                if matches!(self.state, Data | TrailerStart) {
                    self.size_line_seen = true;
                }
            }
            DataCr if b == b'\r' => self.state = DataLf,
            DataLf if b == b'\n' => {
                self.state = Size;
                self.line_len = 0;
            }
            DataCr | DataLf => return Err(ChunkError::MissingCrlf),
            TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILERS {
                    return Err(ChunkError::TrailersTooLarge);
                }
                self.state = self.trailer(b)?;
            }
            // `feed` handles these without stepping byte by byte.
            Data | Done => {}
        }
        Ok(())
    }

    /// The next state within a chunk-size line.
    fn size_line(&mut self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        let ws = b == b' ' || b == b'\t';
        let next = match self.state {
            Size => {
                if let Some(digit) = (b as char).to_digit(16) {
                    if self.remaining > MAX_CHUNK_SIZE >> 4 {
                        return Err(ChunkError::BadSize);
                    }
                    self.remaining = self.remaining << 4 | u64::from(digit);
                    return Ok(Size);
                }
                // Everything else needs at least one digit before it.
                if self.line_len == 1 {
                    return Err(ChunkError::BadSize);
                }
                match b {
                    b';' => ExtName,
                    b'\r' => SizeLf,
                    _ if ws => SizeBws,
                    _ => return Err(ChunkError::BadSize),
                }
            }
            SizeBws | AfterExtValueBws if ws => self.state,
            SizeBws | AfterExtValueBws if b == b';' => ExtName,
            ExtName if ws => ExtName,
            ExtName | InExtName if is_tchar(b) => InExtName,
            InExtName | AfterExtName if b == b'=' => ExtValue,
            InExtName | AfterExtName if ws => AfterExtName,
            InExtName | AfterExtName | AfterExtValue if b == b';' => ExtName,
            InExtName | AfterExtValue if b == b'\r' => SizeLf,
            ExtValue if ws => ExtValue,
            ExtValue if b == b'"' => InExtQuoted,
            ExtValue | InExtToken if is_tchar(b) => InExtToken,
            InExtToken if b == b';' => ExtName,
            InExtToken if b == b'\r' => SizeLf,
            InExtToken | AfterExtValue if ws => AfterExtValueBws,
            InExtQuoted if b == b'"' => AfterExtValue,
            InExtQuoted if b == b'\\' => ExtEscape,
            InExtQuoted if is_qdtext(b) => InExtQuoted,
            ExtEscape if b == b'\t' || b == b' ' || is_vchar(b) => InExtQuoted,
            SizeLf if b == b'\n' => {
                return Ok(if self.remaining == 0 {
                    TrailerStart
                } else {
                    Data
                });
            }
            _ => return Err(ChunkError::BadSize),
        };
        Ok(next)
    }

    /// The next state within the trailer section.
    fn trailer(&self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        let next = match self.state {
            TrailerStart if b == b'\r' => FinalLf,
            TrailerStart | TrailerName if is_tchar(b) => TrailerName,
            TrailerName if b == b':' => TrailerValue,
            TrailerValue if b == b'\t' || b == b' ' || is_vchar(b) => TrailerValue,
            TrailerValue if b == b'\r' => TrailerLf,
            TrailerLf if b == b'\n' => TrailerStart,
            FinalLf if b == b'\n' => Done,
            _ => return Err(ChunkError::BadTrailer),
        };
        Ok(next)
    }
}

/// `VCHAR / obs-text`.
fn is_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// RFC 9110 `qdtext`: HTAB, SP, VCHAR or obs-text except `"` and `\`.
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || (is_vchar(b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests;
