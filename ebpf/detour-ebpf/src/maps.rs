//! The programs' maps, and the outcome counter shared by all of them.
//! Names, key/value types and capacities are defined in `detour-common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, SockHash},
};
use detour_common::{Config, OrigDst, SockKey, Steered, capacity, counter};

#[map]
pub static STEERED: HashMap<SockKey, Steered> = HashMap::with_max_entries(capacity::STEERED, 0);

#[map]
pub static ORIG_BY_COOKIE: LruHashMap<u64, OrigDst> =
    LruHashMap::with_max_entries(capacity::ORIG_BY_COOKIE, 0);

#[map]
pub static ORIG_BY_PEER: LruHashMap<SockKey, OrigDst> =
    LruHashMap::with_max_entries(capacity::ORIG_BY_PEER, 0);

#[map]
pub static RELAY: SockHash<u64> = SockHash::with_max_entries(capacity::RELAY, 0);

/// Shared with the fork objects (the agent pins it and hands them the pin).
#[map]
pub static FORK_SOURCES: LruHashMap<u64, u32> =
    LruHashMap::with_max_entries(capacity::FORK_SOURCES, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Adds one to a per-CPU counter. Per-CPU slots need no atomics.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is to this CPU's slot, valid for the program run.
        unsafe { *slot += 1 };
    }
}
