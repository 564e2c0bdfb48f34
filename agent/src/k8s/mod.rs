//! The Kubernetes route source: custom resources, and (in `source`) the
//! reflectors that turn cluster state into the same route snapshot the
//! routes file produces.

pub mod crd;
