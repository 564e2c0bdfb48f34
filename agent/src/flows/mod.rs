//! The flow table: every connection the proxy holds right now, and a feed
//! of its routing decisions as they are made.
//!
//! This is proxy state that others read. The proxy writes it on every
//! connection and request (and decides an idle HTTP/2 connection's GOAWAY
//! from a flow's open streams); the admin API serves it to `detour flows` and
//! `detour trace`. It sits below both, so neither imports the other: the
//! proxy never sees the admin API's wire types, and the admin API reads the
//! table without knowing how the proxy fills it.
//!
//! The writes are cheap: a flow is registered once per connection; a request
//! bumps a counter and replaces the flow's last routing under an uncontended
//! lock; a trace event is built only while someone is tracing
//! ([`trace`]). A parked connection's record is held by value ([`parked`]).

mod flow;
mod parked;
mod table;
mod trace;

pub use flow::{Flow, FlowView, Routing};
pub use table::{FlowGuard, FlowTable, ParkedFlowGuard};
pub use trace::{TRACE_BUFFER, TraceEvent};
