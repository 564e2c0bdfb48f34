//! Read buffers, lent to connections only while they have bytes to move.
//!
//! A keep-alive client connection spends most of its life waiting for its
//! next request. It waits for readiness with no buffer at all, takes one
//! from here when bytes arrive, and gives it back when the response is
//! done, so thousands of idle connections cost no buffer memory, and a busy
//! proxy reuses the same few buffers instead of going to the allocator for
//! every request. The pool keeps at most [`MAX_FREE`] buffers: what a burst
//! needed beyond that goes back to the allocator.
//!
//! Spliced connections borrow larger buffers ([`BufferPool::for_splices`])
//! the same way: one per direction, only while bytes flow.

use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;

/// Capacity of every pooled buffer: one socket read.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Free buffers kept (at most 2 MiB).
pub const MAX_FREE: usize = 128;
/// Capacity of a splice buffer: one large read, so that a bulk transfer
/// costs few system calls per byte.
pub const SPLICE_BUFFER_SIZE: usize = 64 * 1024;
/// Free splice buffers kept (at most 2 MiB).
pub const SPLICE_MAX_FREE: usize = 32;

#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Vec<BytesMut>>,
    size: usize,
    max_free: usize,
}

impl Default for BufferPool {
    /// Read buffers of [`BUFFER_SIZE`], at most [`MAX_FREE`] kept.
    fn default() -> Self {
        Self::new(BUFFER_SIZE, MAX_FREE)
    }
}

impl BufferPool {
    fn new(size: usize, max_free: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            size,
            max_free,
        }
    }

    /// Splice buffers of [`SPLICE_BUFFER_SIZE`], at most
    /// [`SPLICE_MAX_FREE`] kept.
    pub fn for_splices() -> Self {
        Self::new(SPLICE_BUFFER_SIZE, SPLICE_MAX_FREE)
    }

    /// An empty buffer of at least the pool's size of capacity.
    pub fn take(&self) -> BytesMut {
        let pooled = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        pooled.unwrap_or_else(|| BytesMut::with_capacity(self.size))
    }

    /// Gives a buffer back; its contents are discarded. A buffer that has
    /// grown is kept as it is; one that cannot hold the pool's size
    /// without allocating (its storage is shared) is dropped.
    pub fn give(&self, mut buf: BytesMut) {
        buf.clear();
        // Reclaims the space before the cursor when the storage is unique;
        // never allocates for an empty buffer that is.
        if !buf.try_reclaim(self.size) {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.max_free {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_empty_and_whole() {
        let pool = BufferPool::default();
        let mut buf = pool.take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let _ = buf.split_to(4);
        let ptr = buf.as_ptr();
        pool.give(buf);
        let again = pool.take();
        assert!(again.is_empty());
        assert!(again.capacity() >= BUFFER_SIZE);
        assert_eq!(
            again.as_ptr(),
            ptr.wrapping_sub(4),
            "the same storage, from its start"
        );
    }

    #[test]
    fn the_pool_keeps_at_most_max_free() {
        let pool = BufferPool::default();
        let taken: Vec<_> = (0..MAX_FREE + 10).map(|_| pool.take()).collect();
        for buf in taken {
            pool.give(buf);
        }
        assert_eq!(pool.free.lock().expect("lock").len(), MAX_FREE);
    }

    #[test]
    fn a_buffer_whose_storage_is_shared_is_not_kept() {
        let pool = BufferPool::default();
        let mut buf = pool.take();
        buf.extend_from_slice(b"abc");
        let frozen = buf.split().freeze();
        pool.give(buf);
        assert!(pool.free.lock().expect("lock").is_empty());
        drop(frozen);
    }
}
