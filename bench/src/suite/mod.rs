//! What the `http` and `h2` suites share beyond their stage
//! (`crate::stage`): how a run is scheduled and how one interval is
//! measured. Each suite brings only its load (wrk, or h2load), its checks
//! and its tables.
//!
//! - [`Rounds`]: round 0 is a warm-up, discarded; in each round every
//!   variant (HTTP/1's two connection modes; HTTP/2 has one) visits every
//!   peer, the peers' order rotating and the variants' order alternating
//!   from round to round, so that no peer always follows the same one.
//! - [`Probe`]: one interval is the suite's load against one peer's
//!   address, with that proxy's CPU time and the fork backend's counters
//!   read before and after ([`Measured`]); the daemons are checked alive
//!   first, and an interval that completed no request fails the run.

mod measure;
mod rounds;

pub use measure::{Measured, Probe};
pub use rounds::Rounds;
