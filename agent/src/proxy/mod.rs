//! The node-local proxy, one stage per module, in the order a connection
//! meets them:
//!
//! - [`accept`]: listeners, the accept loop, each connection's original
//!   destination, service, origin and flow, and its protocol;
//! - [`context`]: what every stage shares;
//! - `detect`: HTTP/1, the HTTP/2 preface, or neither, on `auto` ports;
//! - [`route`]: a request's routing key in, its upstream out (one stage for
//!   every protocol);
//! - [`upstream`]: the one upstream connect, from the client's namespace
//!   ([`origin`]);
//! - [`opaque`]: bytes spliced to the original destination (copied, or
//!   relayed in the kernel);
//! - [`http1`] and [`h2`]: each protocol's own serving, pools and state.
//!
//! Beside them: read and splice buffers lent per use ([`buffers`]), the
//! errors the proxy answers with ([`error`]), and its metrics.

pub mod accept;
pub mod buffers;
pub mod context;
mod detect;
pub mod error;
pub mod h2;
pub mod http1;
pub mod kafka;
mod metrics;
pub mod opaque;
pub mod origin;
mod prefixed;
pub mod route;
pub mod upstream;

pub use accept::{LISTEN_BACKLOG, listen, serve};
pub use context::{Proxy, ProxyContext};
pub use detect::Detected;
pub use metrics::ProxyMetrics;
