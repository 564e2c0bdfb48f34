//! HTTP/1.x on the request path: request/response head parsing with strict
//! RFC 9112 framing, chunked bodies, and routing-key extraction.
//!
//! Everything here is synchronous and allocation-light; the proxy's
//! connection loop (`crate::proxy`) drives it over sockets.

pub mod chunked;
pub mod head;
pub mod routing_key;
