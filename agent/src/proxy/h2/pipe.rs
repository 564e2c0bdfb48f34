//! One direction of an HTTP/2 stream's body: DATA and trailers from one
//! peer's stream to the other's, under both peers' flow control.
//!
//! Nothing is buffered beyond one DATA frame: a chunk is released to the
//! sender's flow-control window only once the receiver's window took it, so
//! a slow reader slows the writer on the other side instead of growing a
//! buffer here. A reset on either side ends the pipe and is passed on: a
//! reset read from `from` is sent to `to` with the same reason here; a reset
//! by `to`'s peer is returned for the caller to pass to `from`'s peer.

use std::{future::poll_fn, task::Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};

/// How a pipe ended short of the end of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeError {
    /// `from`'s peer reset its stream or its connection failed; `to` was
    /// reset with this reason.
    From(Reason),
    /// `to`'s peer reset its stream (or its connection failed) with this
    /// reason: `from`'s peer should be reset.
    To(Reason),
}

/// Copies `from`'s body and trailers to `to` until the end of the stream.
/// Returns the number of body bytes copied.
pub async fn pipe(from: &mut RecvStream, to: &mut SendStream<Bytes>) -> Result<u64, PipeError> {
    let mut copied = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            reset = poll_fn(|cx| to.poll_reset(cx)) => {
                return Err(PipeError::To(reason_of(reset)));
            }
            next = from.data() => next,
        };
        match next {
            Some(Ok(chunk)) => {
                let len = chunk.len();
                // The last DATA frame of the stream (no trailers follow):
                // forward it with END_STREAM, not as a frame of its own.
                let last = from.is_end_stream();
                send_chunk(to, chunk, last).await?;
                copied += len as u64;
                // Only now may `from`'s peer send more.
                let _ = from.flow_control().release_capacity(len);
                if last {
                    return Ok(copied);
                }
            }
            Some(Err(error)) => {
                let reason = error.reason().unwrap_or(Reason::CANCEL);
                to.send_reset(reason);
                return Err(PipeError::From(reason));
            }
            None => break,
        }
    }
    match from.trailers().await {
        Ok(Some(trailers)) => to
            .send_trailers(trailers)
            .map_err(|error| PipeError::To(error.reason().unwrap_or(Reason::CANCEL)))?,
        Ok(None) => to
            .send_data(Bytes::new(), true)
            .map_err(|error| PipeError::To(error.reason().unwrap_or(Reason::CANCEL)))?,
        Err(error) => {
            let reason = error.reason().unwrap_or(Reason::CANCEL);
            to.send_reset(reason);
            return Err(PipeError::From(reason));
        }
    }
    Ok(copied)
}

/// Sends `chunk` as the receiver's window allows; its last frame ends the
/// stream when `end`.
async fn send_chunk(
    to: &mut SendStream<Bytes>,
    mut chunk: Bytes,
    end: bool,
) -> Result<(), PipeError> {
    if chunk.is_empty() {
        return to
            .send_data(chunk, end)
            .map_err(|error| PipeError::To(error.reason().unwrap_or(Reason::CANCEL)));
    }
    while !chunk.is_empty() {
        to.reserve_capacity(chunk.len());
        let granted = poll_fn(|cx| {
            if let Poll::Ready(reset) = to.poll_reset(cx) {
                return Poll::Ready(Err(reason_of(reset)));
            }
            to.poll_capacity(cx).map(Ok)
        })
        .await
        .map_err(PipeError::To)?;
        match granted {
            Some(Ok(0)) => continue,
            Some(Ok(n)) => {
                let part = chunk.split_to(n.min(chunk.len()));
                to.send_data(part, end && chunk.is_empty())
                    .map_err(|error| PipeError::To(error.reason().unwrap_or(Reason::CANCEL)))?;
            }
            Some(Err(error)) => {
                return Err(PipeError::To(error.reason().unwrap_or(Reason::CANCEL)));
            }
            None => return Err(PipeError::To(Reason::CANCEL)),
        }
    }
    Ok(())
}

/// The reason a `poll_reset` reported; a connection failure counts as CANCEL.
pub fn reason_of(reset: Result<Reason, h2::Error>) -> Reason {
    match reset {
        Ok(reason) => reason,
        Err(error) => error.reason().unwrap_or(Reason::CANCEL),
    }
}
