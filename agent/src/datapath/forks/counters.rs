//! The fork programs' outcome counters by sandbox, exported at scrape time
//! as `detour_fork_connects_total{sandbox, outcome}`: a fork pod's connect
//! to a forked keyless service `redirected` to the fork, or `refused`
//! (no ready fork endpoint). A fork that keeps being refused is a fork that
//! is down, seen from its callers.
//!
//! Each load of the fork programs counts in its own `FORK_COUNTERS`
//! (per CPU). A load that goes (its sandbox or group gone, or replaced)
//! leaves its counts to its sandbox's total, so a counter never goes back
//! while the agent runs. Counts start with the agent: pinned programs of an
//! earlier run count in maps this one does not read.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, PerCpuArray};
use detour_common::fork_counter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};

/// Counts by outcome, in [`fork_counter::NAMES`] order.
pub type Totals = [u64; fork_counter::COUNT as usize];

/// Every load's counters; cloned into the metrics registry.
#[derive(Clone, Default)]
pub struct ForkCounters {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Live loads, by load number: their sandbox and their map.
    live: BTreeMap<u64, (Arc<str>, PerCpuArray<MapData, u64>)>,
    /// What loads that went counted, by sandbox.
    retired: BTreeMap<Arc<str>, Totals>,
}

impl std::fmt::Debug for ForkCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkCounters").finish_non_exhaustive()
    }
}

fn read(map: &PerCpuArray<MapData, u64>) -> Totals {
    let mut totals = Totals::default();
    for (index, total) in (0u32..).zip(totals.iter_mut()) {
        if let Ok(values) = map.get(&index, 0) {
            *total = values.iter().sum();
        }
    }
    totals
}

fn add(into: &mut Totals, from: Totals) {
    for (total, more) in into.iter_mut().zip(from) {
        *total += more;
    }
}

impl ForkCounters {
    /// Load `load` of `sandbox`'s fork programs counts in `map`.
    pub(super) fn track(&self, load: u64, sandbox: Arc<str>, map: PerCpuArray<MapData, u64>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.live.insert(load, (sandbox, map));
        }
    }

    /// Load `load` goes: its counts stay with its sandbox.
    pub(super) fn retire(&self, load: u64) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some((sandbox, map)) = inner.live.remove(&load)
        {
            let counted = read(&map);
            add(inner.retired.entry(sandbox).or_default(), counted);
        }
    }

    /// Every sandbox's counts so far.
    pub fn totals(&self) -> BTreeMap<Arc<str>, Totals> {
        let Ok(inner) = self.inner.lock() else {
            return BTreeMap::new();
        };
        let mut all = inner.retired.clone();
        for (sandbox, map) in inner.live.values() {
            add(all.entry(Arc::clone(sandbox)).or_default(), read(map));
        }
        all
    }
}

impl Collector for ForkCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let totals = self.totals();
        let mut family = encoder.encode_descriptor(
            "fork_connects",
            "Fork pods' connects to forked keyless services, by sandbox and outcome \
             (redirected to the fork, or refused: no ready fork endpoint)",
            None,
            MetricType::Counter,
        )?;
        for (sandbox, counts) in &totals {
            for (outcome, total) in fork_counter::NAMES.iter().zip(counts) {
                let labels = [("sandbox", &**sandbox), ("outcome", *outcome)];
                ConstCounter::new(*total).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
