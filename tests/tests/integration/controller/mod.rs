//! The sandbox controller on the real control plane: a Sandbox's forks made
//! from its baseline, and a Sandbox's whole life.

mod lifecycle;
mod sandboxes;
