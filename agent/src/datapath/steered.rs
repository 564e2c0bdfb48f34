//! Reconciling the `STEERED` map: a pure function from what is installed and
//! what is desired to the writes that make one into the other, and the loop
//! that performs them against anything that behaves like the map.
//!
//! The map can be smaller than what a snapshot wants (`--steered-capacity`).
//! A failed write never stops the others: removals go first, then as many
//! insertions as fit. A destination that is not in the map is simply not
//! steered, so its connects go straight to where they were addressed
//! (fail-open). `installed` only ever records what the kernel accepted, so
//! the next snapshot's plan retries exactly the writes that failed.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, MapError};
use detour_common::SockKey;

/// The writes that turn `installed` into `desired`.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<K, V> {
    pub upsert: Vec<(K, V)>,
    pub remove: Vec<K>,
}

pub fn plan<K: Ord + Copy, V: PartialEq + Copy>(
    installed: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Plan<K, V> {
    let upsert = desired
        .iter()
        .filter(|(key, value)| installed.get(*key) != Some(*value))
        .map(|(key, value)| (*key, *value))
        .collect();
    let remove = installed
        .keys()
        .filter(|key| !desired.contains_key(*key))
        .copied()
        .collect();
    Plan { upsert, remove }
}

/// Why the kernel refused one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The map holds as many entries as it can (`E2BIG`).
    Full,
    /// Anything else, as the kernel said it.
    Other(String),
}

/// Single-entry writes to a map, as the kernel performs them. Removing a
/// key that is not there succeeds.
pub trait MapWrites<K, V> {
    fn insert(&mut self, key: &K, value: &V) -> Result<(), WriteError>;
    fn remove(&mut self, key: &K) -> Result<(), WriteError>;
}

/// What one reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Entries the kernel holds afterwards.
    pub installed: usize,
    /// Entries the snapshot wants.
    pub wanted: usize,
    pub added_or_changed: usize,
    pub removed: usize,
    /// Wanted entries the kernel does not hold as wanted: not steered.
    pub not_installed: usize,
    /// Entries no longer wanted that could not be removed: still steered.
    pub not_removed: usize,
    /// Failed writes because the map was full.
    pub full_errors: u64,
    /// Failed writes for any other reason.
    pub other_errors: u64,
    /// The first of those other reasons, for the log and `detour status`.
    pub first_error: Option<String>,
}

impl Applied {
    fn failed(&mut self, error: WriteError) {
        match error {
            WriteError::Full => self.full_errors += 1,
            WriteError::Other(message) => {
                self.other_errors += 1;
                self.first_error.get_or_insert(message);
            }
        }
    }

    /// What `detour status` lists while the kernel does not hold exactly the
    /// snapshot's destinations. `capacity` is the map's size.
    pub fn problems(&self, capacity: u32) -> Vec<String> {
        let mut problems = Vec::new();
        if self.not_installed > 0 {
            let not = self.not_installed;
            let wanted = self.wanted;
            let cause = if self.full_errors > 0 {
                format!(
                    "the STEERED map is full at its capacity of {capacity}; raise \
                     --steered-capacity (DETOUR_STEERED_CAPACITY)"
                )
            } else {
                format!(
                    "writing them to the STEERED map failed: {}",
                    self.first_error.as_deref().unwrap_or("unknown error")
                )
            };
            problems.push(format!(
                "{not} of {wanted} steered destinations are not installed, so their connects go \
                 straight to their destination (baseline): {cause}; retried on every route change"
            ));
        }
        if self.not_removed > 0 {
            problems.push(format!(
                "{} destinations no longer routed could not be removed from the STEERED map and \
                 are still redirected: {}",
                self.not_removed,
                self.first_error.as_deref().unwrap_or("unknown error")
            ));
        }
        problems
    }
}

/// Makes `map` hold `desired`, as far as it will: removals first, then
/// insertions, each failure counted and skipped. `installed` is what the
/// map held before and is updated to what it holds after.
pub fn reconcile<K, V, M>(
    map: &mut M,
    installed: &mut BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Applied
where
    K: Ord + Copy,
    V: PartialEq + Copy,
    M: MapWrites<K, V>,
{
    let plan = plan(installed, desired);
    let mut applied = Applied::default();
    for key in &plan.remove {
        match map.remove(key) {
            Ok(()) => {
                installed.remove(key);
                applied.removed += 1;
            }
            Err(error) => applied.failed(error),
        }
    }
    for (key, value) in &plan.upsert {
        match map.insert(key, value) {
            Ok(()) => {
                installed.insert(*key, *value);
                applied.added_or_changed += 1;
            }
            // A failed update leaves the old value, if any, in force.
            Err(error) => applied.failed(error),
        }
    }
    applied.installed = installed.len();
    applied.wanted = desired.len();
    applied.not_installed = desired
        .iter()
        .filter(|(key, value)| installed.get(*key) != Some(*value))
        .count();
    applied.not_removed = installed
        .keys()
        .filter(|key| !desired.contains_key(*key))
        .count();
    applied
}

impl<V: aya::Pod> MapWrites<SockKey, V> for HashMap<MapData, SockKey, V> {
    fn insert(&mut self, key: &SockKey, value: &V) -> Result<(), WriteError> {
        Self::insert(self, key, value, 0).map_err(write_error)
    }

    fn remove(&mut self, key: &SockKey) -> Result<(), WriteError> {
        match Self::remove(self, key) {
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            other => other.map_err(write_error),
        }
    }
}

/// A full `HASH` map refuses a new key with `E2BIG`.
fn write_error(error: MapError) -> WriteError {
    match &error {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            WriteError::Full
        }
        _ => WriteError::Other(error_chain(&error)),
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
