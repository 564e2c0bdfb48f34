//! Hitless upgrades: a new agent starts while the old one still runs on the
//! node, and takes over without a moment in which connects go direct.
//!
//! The old agent serves a handover socket (`--handover-socket`, a Unix
//! socket beside the admin socket). A new agent connects to it before it
//! binds anything and receives, over `SCM_RIGHTS` ([`wire`]):
//! - the old agent's listening sockets (proxy and metrics): the same sockets,
//!   so both agents accept from one accept queue and no connection waiting
//!   in it is lost when the old agent stops accepting;
//! - the old agent's `ORIG_BY_PEER` map, so that it finds the original
//!   destination of a connection the old agent's programs redirected.
//!
//! The new agent attaches its programs beside the old ones (multi-attach:
//! the old agent's run first and redirect, so records keep landing in the
//! old agent's map while it is attached), syncs its routes, and only then
//! accepts; it then sends `Ready` with its own map, which the old agent
//! reads too (so each finds the other's records whichever accepts). On
//! SIGTERM, an old agent with a ready successor stops accepting, then
//! detaches, then drains: every connect is redirected by one agent or the
//! other, and every accepted connection finds its record. Without a ready
//! successor it keeps the fail-open order (detach first).
//!
//! Why handed-over sockets rather than two listeners with `SO_REUSEPORT`:
//! with two listeners the kernel spreads new connections over both, and the
//! connections waiting in the old listener's queue when it closes are reset
//! unless `net.ipv4.tcp_migrate_req` is set on the node (kernel 5.14 and a
//! writable sysctl) or an `SK_REUSEPORT` program steers them. One shared
//! socket needs neither, works on every kernel detour runs on, and is how
//! Envoy's hot restart and HAProxy's seamless reload hand over too.

mod offer;
mod take;
pub mod wire;

pub use offer::{Offered, Successor, serve};
pub use take::{Inherited, take_over};

#[cfg(test)]
mod tests;
