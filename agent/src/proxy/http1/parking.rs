//! Parking: idle keep-alive connections wait outside tokio's tasks.
//!
//! A keep-alive connection between requests costs its task and its
//! registration with tokio's reactor, about 1.5 KB with its flow record
//! (bench/RESULTS.md), most of it tokio's fixed cost. Ten thousand idle
//! clients would cost 15 MB. Once a connection has been idle for
//! `--park-idle-after`, it parks instead: its task ends, its socket leaves
//! tokio's reactor for the lot's own epoll set, and what it needs to resume
//! (service, permit, idle deadline) and its flow record (by value, see
//! `flows::parked`) take one slot each in two slabs. A parked
//! connection costs about 300 bytes, and nothing of it is left on the heap
//! on its own, so the memory its task used can go back to the OS.
//!
//! One task runs the lot: the epoll set is one file descriptor in tokio's
//! reactor. When a parked socket is readable the task takes the connection
//! out, reads what arrived, and spawns a task that serves it like any other;
//! a socket that was closed meanwhile is closed here, without a task. Once a
//! second the task closes the connections whose idle timeout has passed (so
//! a parked connection's timeout is kept to within a second), and gives the
//! memory freed by the connections parked since the last sweep back to the
//! OS. At drain, every parked connection is closed at once.
//!
//! The cost is four `epoll_ctl` calls per park and resume, paid once per
//! idle period of at least `--park-idle-after`: nothing on a busy
//! connection.

use std::{
    io::ErrorKind,
    os::fd::{AsRawFd, RawFd},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use nix::{
    errno::Errno,
    sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
};
use slab::Slab;
use tokio::{io::unix::AsyncFd, net::TcpStream, sync::OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, warn};

use crate::{
    flows::{FlowGuard, ParkedFlowGuard},
    proxy::{Proxy, ProxyContext, origin::Origin, route::Conn},
};

/// How often parked connections are checked against their idle timeout.
const SWEEP: Duration = Duration::from_secs(1);
/// Readiness events taken from the epoll set at a time.
const EVENTS: usize = 64;
/// Connections parked before the memory their tasks freed is given back to
/// the OS (a few are not worth the walk over the allocator's free lists).
const TRIM_AFTER: usize = 32;

/// What a connection owns besides its socket and routing facts, handed from
/// task to lot and back: its `detour flows` record and its
/// `--max-connections` permit.
pub struct Lease {
    pub flow: FlowGuard,
    pub permit: OwnedSemaphorePermit,
}

/// The parked connections and the epoll set that watches their sockets.
pub struct ParkingLot {
    interest: AsyncFd<EpollSet>,
    lot: Mutex<Lot>,
}

struct Lot {
    parked: Slab<Parked>,
    /// Set at drain: a connection parked after it is closed instead.
    closed: bool,
    /// Connections parked since memory was last given back.
    newly_parked: usize,
}

/// One parked connection.
struct Parked {
    // Dropped in this order: by the time the client sees its connection
    // closed, its flow record and its slot are gone.
    flow: ParkedFlowGuard,
    permit: OwnedSemaphorePermit,
    socket: std::net::TcpStream,
    service_id: u32,
    /// Where its upstream connections leave from.
    origin: Origin,
    idle_deadline: Instant,
}

/// The epoll set, as tokio's reactor sees it.
struct EpollSet(Epoll);

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

impl ParkingLot {
    /// The lot, when parking is on (`park_after` is not zero). Without an
    /// epoll set (the kernel refused one) idle connections stay in their
    /// tasks, as with parking off.
    pub fn when_enabled(park_after: Duration) -> Option<Self> {
        if park_after.is_zero() {
            return None;
        }
        Self::new()
            .inspect_err(|error| warn!(%error, "cannot create the parking lot; idle connections are not parked"))
            .ok()
    }

    /// Creates the epoll set and registers it with the current runtime.
    fn new() -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Self {
            // SAFETY: the epoll set owns its descriptor (an `OwnedFd`) for
            // as long as the `AsyncFd` holds it, and never replaces it.
            interest: unsafe {
                AsyncFd::register_with_interest(EpollSet(epoll), tokio::io::Interest::READABLE)
            }
            .map_err(|error| error.into_parts().1)?,
            lot: Mutex::new(Lot {
                parked: Slab::new(),
                closed: false,
                newly_parked: 0,
            }),
        })
    }

    /// Parks an idle connection until its next request, for at most
    /// `idle_left`. The connection is closed instead when the lot is closed
    /// (draining) or the kernel refuses it.
    pub fn park(
        &self,
        client: TcpStream,
        conn: Conn,
        lease: Lease,
        ctx: &ProxyContext,
        idle_left: Duration,
    ) {
        let socket = match client.into_std() {
            Ok(socket) => socket,
            Err(error) => return debug!(%error, "cannot park an idle connection; closed"),
        };
        // The flow's shared record is given up before it is parked by value.
        let (service_id, origin) = (conn.service_id, conn.origin.clone());
        drop(conn);
        let parked = Parked {
            socket,
            service_id,
            origin,
            idle_deadline: Instant::now() + idle_left,
            permit: lease.permit,
            flow: ctx.flows.park(lease.flow),
        };
        self.insert(parked, ctx);
    }

    fn insert(&self, parked: Parked, ctx: &ProxyContext) {
        let mut lot = self.lot.lock().unwrap_or_else(PoisonError::into_inner);
        if lot.closed {
            return debug!("idle connection closed: draining");
        }
        let entry = lot.parked.vacant_entry();
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            token(entry.key(), parked.socket.as_raw_fd()),
        );
        if let Err(error) = self.interest.get_ref().0.add(&parked.socket, event) {
            return warn!(%error, "cannot park an idle connection; closed");
        }
        entry.insert(parked);
        lot.newly_parked += 1;
        ctx.metrics.set_parked(lot.parked.len());
    }

    /// Takes out the connection `token` names, if it is still parked.
    fn take(&self, token: u64, ctx: &ProxyContext) -> Option<Parked> {
        let (key, fd) = untoken(token);
        let mut lot = self.lot.lock().unwrap_or_else(PoisonError::into_inner);
        if lot.parked.get(key)?.socket.as_raw_fd() != fd {
            return None;
        }
        let parked = lot.parked.remove(key);
        ctx.metrics.set_parked(lot.parked.len());
        drop(lot);
        // Out of the set before tokio's reactor takes the socket.
        let _ = self.interest.get_ref().0.delete(&parked.socket);
        Some(parked)
    }

    /// Serves the first bytes of a parked connection's next request in a
    /// new task; closes it if it was closed meanwhile.
    fn wake(&self, token: u64, proxy: &Arc<Proxy>, tracker: &TaskTracker) {
        let ctx = &proxy.ctx;
        let Some(parked) = self.take(token, ctx) else {
            return;
        };
        let mut buf = ctx.buffers.take();
        // Read here, before tokio's reactor takes the socket: a socket it has
        // just registered reads as not ready until its next turn.
        match receive(&parked.socket, &mut buf) {
            Ok(0) => debug!("parked connection closed by the client"),
            Ok(_) => match TcpStream::from_std(parked.socket) {
                Ok(client) => {
                    let flow = parked.flow.resume();
                    let span = debug_span!("conn", peer = %flow.flow.client);
                    let conn = Conn::of(parked.service_id, &flow.flow, parked.origin);
                    let lease = Lease {
                        flow,
                        permit: parked.permit,
                    };
                    let task = resume(client, buf, conn, lease, Arc::clone(proxy));
                    tracker.spawn(task.instrument(span));
                    return;
                }
                Err(error) => warn!(%error, "cannot resume a parked connection; closed"),
            },
            // Readiness was stale: back to the lot, as it was.
            Err(error) if error.kind() == ErrorKind::WouldBlock => self.insert(parked, ctx),
            Err(error) => debug!(%error, "parked connection failed"),
        }
        ctx.buffers.give(buf);
    }

    /// Closes the connections whose idle timeout has passed. True when
    /// enough were parked since the last time to give memory back.
    fn sweep(&self, ctx: &ProxyContext) -> bool {
        let now = Instant::now();
        let (expired, trim) = {
            let mut lot = self.lot.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<usize> = lot
                .parked
                .iter()
                .filter(|(_, parked)| parked.idle_deadline <= now)
                .map(|(key, _)| key)
                .collect();
            let expired: Vec<Parked> = keys.into_iter().map(|key| lot.parked.remove(key)).collect();
            ctx.metrics.set_parked(lot.parked.len());
            let trim = lot.newly_parked >= TRIM_AFTER;
            if trim {
                lot.newly_parked = 0;
            }
            (expired, trim)
        };
        if !expired.is_empty() {
            debug!(
                closed = expired.len(),
                "parked connections idle past the idle timeout"
            );
        }
        // Closing a socket also takes it out of the epoll set.
        drop(expired);
        trim
    }

    /// Closes every parked connection, and every one parked from now on.
    fn close(&self, ctx: &ProxyContext) {
        let parked = {
            let mut lot = self.lot.lock().unwrap_or_else(PoisonError::into_inner);
            lot.closed = true;
            std::mem::take(&mut lot.parked)
        };
        ctx.metrics.set_parked(0);
        if !parked.is_empty() {
            debug!(closed = parked.len(), "parked connections closed: draining");
        }
    }
}

/// Runs the lot of `proxy` until the agent drains; resumed connections are
/// spawned on `tracker`.
pub async fn run(proxy: Arc<Proxy>, tracker: TaskTracker) {
    let Some(lot) = proxy.http1.parking.as_ref() else {
        return;
    };
    let ctx = &proxy.ctx;
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = [EpollEvent::empty(); EVENTS];
    loop {
        tokio::select! {
            biased;
            () = ctx.draining.cancelled() => break,
            ready = lot.interest.readable() => {
                let mut ready = match ready {
                    Ok(ready) => ready,
                    Err(error) => {
                        warn!(%error, "parking lot failed; idle connections are closed");
                        break;
                    }
                };
                let woken = match lot.interest.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                    Ok(woken) => woken,
                    Err(Errno::EINTR) => continue,
                    Err(error) => {
                        warn!(%error, "parking lot failed; idle connections are closed");
                        break;
                    }
                };
                if woken < EVENTS {
                    ready.clear_ready();
                }
                for event in &events[..woken] {
                    lot.wake(event.data(), &proxy, &tracker);
                }
            }
            _ = sweep.tick() => {
                if lot.sweep(ctx) {
                    // The tasks of the connections just parked have ended:
                    // their memory is free, give it back.
                    crate::limits::release_freed_memory();
                }
            }
        }
    }
    lot.close(ctx);
}

/// A resumed connection's task: served like any other HTTP/1 connection
/// from its next request on. An `async move` block, as `proxy::handle`.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold each argument twice in every idle connection"
)]
fn resume(
    client: TcpStream,
    buf: BytesMut,
    conn: Conn,
    lease: Lease,
    proxy: Arc<Proxy>,
) -> impl Future<Output = ()> {
    async move { super::serve(client, buf, conn, lease, &proxy.ctx, &proxy.http1).await }
}

/// One non-blocking read from a parked socket into `buf`'s spare capacity.
fn receive(socket: &std::net::TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let read = socket2::SockRef::from(socket).recv(buf.spare_capacity_mut())?;
    // SAFETY: recv(2) initialized the first `read` bytes of the spare
    // capacity, which now follow the buffer's contents.
    unsafe { buf.set_len(buf.len() + read) };
    Ok(read)
}

/// A parked connection's epoll token: its slot, and its socket to tell a
/// stale token from the slot's next tenant.
fn token(key: usize, fd: RawFd) -> u64 {
    ((key as u64) << 32) | u64::from(fd as u32)
}

fn untoken(token: u64) -> (usize, RawFd) {
    ((token >> 32) as usize, token as u32 as RawFd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What bench/RESULTS.md states a parked connection costs: this slot
    /// and its flow record (`flows::parked`), nothing else.
    #[test]
    fn a_parked_connection_takes_one_small_slot() {
        assert!(size_of::<Parked>() <= 64, "{} bytes", size_of::<Parked>());
    }

    #[test]
    fn a_token_names_its_slot_and_socket() {
        assert_eq!(untoken(token(0, 7)), (0, 7));
        assert_eq!(untoken(token(123_456, 65_535)), (123_456, 65_535));
    }
}
