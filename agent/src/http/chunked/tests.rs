//! The chunked decoder over whole, byte-by-byte and randomly split input,
//! and each way a chunked body can be malformed.

use super::*;

/// A valid body with extensions and trailers, and the bytes after it.
const BODY: &[u8] = b"5\r\nhello\r\n\
    1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n\
    3 ; a = \"q\\\"s;\" ;b\r\nxyz\r\n\
    000;last\r\n\
    Expires: never\r\nX-Checksum:\tabc \r\n\
    \r\n";
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

/// Feeds `pieces` in order, as the proxy would (re-feeding what a call left
/// over only until the body is done); returns the bytes consumed.
fn feed_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(usize, bool), ChunkError> {
    let mut decoder = ChunkedDecoder::new();
    let mut consumed = 0;
    for piece in pieces {
        let progress = decoder.feed(piece)?;
        consumed += progress.consumed;
        assert_eq!(progress.done, decoder.is_done());
        if progress.done {
            return Ok((consumed, true));
        }
        assert_eq!(
            progress.consumed,
            piece.len(),
            "an unfinished body consumes everything it is fed"
        );
    }
    Ok((consumed, false))
}

fn feed_whole(input: &[u8]) -> Result<Progress, ChunkError> {
    ChunkedDecoder::new().feed(input)
}

fn with_next(body: &[u8]) -> Vec<u8> {
    [body, NEXT].concat()
}

#[test]
fn whole_body_stops_at_its_end() {
    let input = with_next(BODY);
    assert_eq!(
        feed_whole(&input),
        Ok(Progress {
            consumed: BODY.len(),
            done: true
        })
    );
}

#[test]
fn simplest_bodies() {
    assert_eq!(
        feed_whole(b"0\r\n\r\n"),
        Ok(Progress {
            consumed: 5,
            done: true
        })
    );
    assert_eq!(
        feed_whole(b"1\r\nx\r\n0\r\n\r\nextra"),
        Ok(Progress {
            consumed: 11,
            done: true
        })
    );
    assert_eq!(
        feed_whole(b"A\r\n0123456789\r\n0\r\n\r\n").map(|p| p.done),
        Ok(true)
    );
    assert_eq!(
        feed_whole(b"a\r\n0123456789\r\n0\r\n\r\n").map(|p| p.done),
        Ok(true)
    );
}

#[test]
fn byte_by_byte() {
    let input = with_next(BODY);
    assert_eq!(feed_pieces(input.chunks(1)), Ok((BODY.len(), true)));
}

#[test]
fn every_split_point() {
    let input = with_next(BODY);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(feed_pieces([a, b]), Ok((BODY.len(), true)), "split at {at}");
    }
}

/// xorshift64: a fixed, dependency-free source of split points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn random_splits() {
    let input = with_next(BODY);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..500 {
        let mut pieces = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(1 + rng.below(rest.len().min(16)));
            pieces.push(piece);
            rest = tail;
        }
        assert_eq!(feed_pieces(pieces), Ok((BODY.len(), true)), "round {round}");
    }
}

#[test]
fn incomplete_body_is_not_done() {
    for end in 0..BODY.len() {
        assert_eq!(
            feed_whole(&BODY[..end]),
            Ok(Progress {
                consumed: end,
                done: false
            }),
            "prefix of {end}"
        );
    }
}

#[test]
fn done_decoder_consumes_nothing_more() {
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(
        decoder.feed(b"0\r\n\r\n"),
        Ok(Progress {
            consumed: 5,
            done: true
        })
    );
    assert_eq!(
        decoder.feed(b"0\r\n\r\n"),
        Ok(Progress {
            consumed: 0,
            done: true
        })
    );
    assert_eq!(
        decoder.feed(b""),
        Ok(Progress {
            consumed: 0,
            done: true
        })
    );
}

#[test]
fn large_chunk_is_skipped_not_scanned() {
    let size: u64 = 1 << 40;
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(
        decoder
            .feed(format!("{size:x}\r\n").as_bytes())
            .map(|p| p.consumed),
        Ok(13)
    );
    let block = vec![0u8; 1 << 20];
    // 1 MiB per call; checking a handful of calls is enough to show no byte is looked at twice.
    for _ in 0..8 {
        assert_eq!(
            decoder.feed(&block),
            Ok(Progress {
                consumed: block.len(),
                done: false
            })
        );
    }
    assert_eq!(decoder.remaining, size - 8 * (1 << 20));
    decoder.remaining = 3;
    assert_eq!(
        decoder.feed(b"abc\r\n0\r\n\r\nnext"),
        Ok(Progress {
            consumed: 3 + 2 + 5,
            done: true
        })
    );
}

#[test]
fn extensions() {
    for line in [
        "5;a",
        "5;a=b",
        "5; a",
        "5 ;a",
        "5\t;\ta\t=\tb\t;c",
        "5;a=\"\"",
        "5;a=\"x y;z\\\"\"",
        "5;a=b;c=\"d\" ;e",
    ] {
        let body = format!("{line}\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            feed_whole(body.as_bytes()).map(|p| p.done),
            Ok(true),
            "{line:?}"
        );
    }
}

#[test]
fn trailers() {
    let body = b"0\r\nA: 1\r\nB:\r\nC:  x y \r\n\r\n";
    assert_eq!(
        feed_whole(body),
        Ok(Progress {
            consumed: body.len(),
            done: true
        })
    );
}

fn error_of(body: &[u8]) -> ChunkError {
    match feed_whole(body) {
        Err(error) => error,
        other => panic!(
            "expected {:?} to be refused, got {other:?}",
            String::from_utf8_lossy(body)
        ),
    }
}

#[test]
fn bad_size_lines() {
    for body in [
        &b"\r\n"[..],
        b"g\r\n",
        b"0x5\r\n",
        b"-5\r\n",
        b"+5\r\n",
        b" 5\r\n",
        b"5 \r\n",
        b"5\t\r\n",
        b"5\n",
        b"5\rx",
        b"5;\r\n",
        b"5;a \r\n",
        b"5;a=\r\n",
        b"5;a=b \r\n",
        b"5;a=\"b\r\n",
        b"5;a\n",
        b"5;a=\"\x01\"\r\n",
        b"5;=b\r\n",
        b"5;a==b\r\n",
        b"5;a=b=c\r\n",
        b"5;a=\"b\"c\r\n",
        b"5 5\r\n",
        b"5,5\r\n",
    ] {
        assert_eq!(
            error_of(body),
            ChunkError::BadSize,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn size_overflow() {
    assert_eq!(error_of(b"10000000000000000\r\n"), ChunkError::BadSize);
    assert_eq!(error_of(b"ffffffffffffffff\r\n"), ChunkError::BadSize);
    assert_eq!(error_of(b"8000000000000000\r\n"), ChunkError::BadSize);
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(
        decoder.feed(b"7fffffffffffffff\r\n").map(|p| p.done),
        Ok(false)
    );
    assert_eq!(decoder.remaining, i64::MAX as u64);
    // Leading zeros do not count towards the size.
    assert_eq!(
        feed_whole(b"00000000000000000000001\r\nx\r\n0\r\n\r\n").map(|p| p.done),
        Ok(true)
    );
}

#[test]
fn size_line_length_limit() {
    let mut fits = b"1;a=".to_vec();
    fits.resize(MAX_CHUNK_LINE - 2, b'b');
    fits.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
    assert_eq!(feed_whole(&fits).map(|p| p.done), Ok(true));

    let mut too_long = b"1;a=".to_vec();
    too_long.resize(MAX_CHUNK_LINE - 1, b'b');
    too_long.extend_from_slice(b"\r\n");
    assert_eq!(error_of(&too_long), ChunkError::LineTooLong);
}

#[test]
fn data_must_end_in_crlf() {
    for body in [
        &b"3\r\nabcd\r\n"[..],
        b"3\r\nabc\n0\r\n\r\n",
        b"3\r\nabc\r0\r\n\r\n",
        b"3\r\nabc\n\r\n",
    ] {
        assert_eq!(
            error_of(body),
            ChunkError::MissingCrlf,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn bad_trailers() {
    for body in [
        &b"0\r\nA: 1\n\r\n"[..],
        b"0\r\n\n",
        b"0\r\nA: 1\r\n b\r\n\r\n",
        b"0\r\nA : 1\r\n\r\n",
        b"0\r\nA\r\n\r\n",
        b": 1\r\n\r\n",
        b"0\r\nA: \0\r\n\r\n",
        b"0\r\nA: 1\r\r\n",
        b"0\r\n\rx",
    ] {
        let body = if body.starts_with(b":") {
            [&b"0\r\n"[..], body].concat()
        } else {
            body.to_vec()
        };
        assert_eq!(
            error_of(&body),
            ChunkError::BadTrailer,
            "{:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn trailer_section_limit() {
    let mut body = b"0\r\nX: ".to_vec();
    body.resize(3 + MAX_TRAILERS - 4, b'v');
    body.extend_from_slice(b"\r\n\r\n");
    assert_eq!(feed_whole(&body).map(|p| p.done), Ok(true));

    let mut body = b"0\r\nX: ".to_vec();
    body.resize(3 + MAX_TRAILERS - 3, b'v');
    body.extend_from_slice(b"\r\n\r\n");
    assert_eq!(error_of(&body), ChunkError::TrailersTooLarge);
}
