//! The sizes of the maps that grow with load, chosen at load time
//! (`--steered-capacity`, `--orig-dst-capacity`); the defaults, and why, are
//! in `detour_common::capacity`.

use detour_common::{capacity, maps};

/// Map sizes, set at load (`--steered-capacity`, `--orig-dst-capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    pub steered: u32,
    pub orig_by_cookie: u32,
    pub orig_by_peer: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            steered: capacity::STEERED,
            orig_by_cookie: capacity::ORIG_BY_COOKIE,
            orig_by_peer: capacity::ORIG_BY_PEER,
        }
    }
}

impl Capacities {
    /// Both original-destination maps sized `capacity`, if given.
    #[must_use]
    pub fn with_orig_dst(self, capacity: Option<u32>) -> Self {
        capacity.map_or(self, |capacity| Self {
            orig_by_cookie: capacity,
            orig_by_peer: capacity,
            ..self
        })
    }
}

impl std::fmt::Display for Capacities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, {} {}, {} {}",
            maps::STEERED,
            self.steered,
            maps::ORIG_BY_COOKIE,
            self.orig_by_cookie,
            maps::ORIG_BY_PEER,
            self.orig_by_peer
        )
    }
}
