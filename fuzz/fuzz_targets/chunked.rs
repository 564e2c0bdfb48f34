//! The chunked body validator (`detour::http::chunked`): no panic on any
//! bytes, and the end of a body does not depend on how its bytes arrive.
//!
//! The first input byte seeds where the rest is cut into reads; the body is
//! then fed whole, in those reads (some empty), and one byte at a time, and
//! the three must agree on how many bytes belong to the body, whether it is
//! complete, and which error refused it. Every `feed` must:
//! - consume a prefix of its input, and all of it unless the body ended;
//! - consume nothing once the body is done, and stay done.

#![no_main]

use detour::http::chunked::{ChunkError, ChunkedDecoder};
use libfuzzer_sys::fuzz_target;

/// What feeding a whole input came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// No error: `consumed` bytes belong to the body.
    Body { consumed: usize, done: bool },
    /// Refused, with this error.
    Refused(ChunkError),
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = feed(body, [body.len()]);
    let reads = feed(body, Reads::new(seed, body.len()));
    assert_eq!(whole, reads, "whole vs reads seeded with {seed}");
    let bytes = feed(body, std::iter::repeat_n(1, body.len()));
    assert_eq!(whole, bytes, "whole vs one byte at a time");

    // A complete body delimits itself: without what follows it, it decodes
    // the same.
    if let Outcome::Body {
        consumed,
        done: true,
    } = whole
    {
        assert_eq!(feed(&body[..consumed], [consumed]), whole, "body alone");
    }
});

/// Feeds `input` to a new decoder in reads of the given lengths (which add up
/// to `input.len()`), checking each `feed`; stops at the first error.
fn feed(input: &[u8], reads: impl IntoIterator<Item = usize>) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut consumed = 0;
    let mut done = false;
    let mut rest = input;
    for len in reads {
        let (read, after) = rest.split_at(len);
        rest = after;
        let progress = match decoder.feed(read) {
            Ok(progress) => progress,
            Err(error) => {
                assert!(!done, "{error:?} after the body was done");
                return Outcome::Refused(error);
            }
        };
        assert!(
            progress.consumed <= read.len(),
            "consumed {} of {} bytes",
            progress.consumed,
            read.len()
        );
        if done {
            assert!(progress.done, "no longer done");
            assert_eq!(progress.consumed, 0, "consumed bytes after the body");
        } else if !progress.done {
            assert_eq!(progress.consumed, read.len(), "stopped short, not done");
        }
        assert_eq!(decoder.is_done(), progress.done, "is_done() disagrees");
        if progress.done {
            assert!(decoder.size_line_seen(), "done without a size line");
        }
        done = progress.done;
        consumed += progress.consumed;
    }
    assert!(rest.is_empty(), "reads do not cover the input");
    // An empty read changes nothing.
    match decoder.feed(&[]) {
        Ok(progress) => {
            assert_eq!(progress.consumed, 0, "consumed from an empty read");
            assert_eq!(progress.done, done, "an empty read changed done");
        }
        Err(error) => panic!("{error:?} from an empty read"),
    }
    Outcome::Body { consumed, done }
}

/// Read lengths derived from a seed: up to `2^(seed % 12)` bytes each, some
/// of them empty, adding up to `total`.
struct Reads {
    state: u64,
    max: usize,
    left: usize,
}

impl Reads {
    fn new(seed: u8, total: usize) -> Self {
        Self {
            // xorshift needs a non-zero state.
            state: (u64::from(seed) << 32) ^ total as u64 | 1,
            max: 1 << (seed % 12),
            left: total,
        }
    }
}

impl Iterator for Reads {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        // `max + 1` is at most 4097: the remainder fits a usize.
        let len = ((self.state % (self.max as u64 + 1)) as usize).min(self.left);
        self.left -= len;
        Some(len)
    }
}
