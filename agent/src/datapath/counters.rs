//! The programs' per-CPU outcome counters, summed over CPUs and exported as
//! Prometheus metrics at scrape time.

use aya::maps::{MapData, PerCpuArray};
use detour_common::counter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::counter::ConstCounter,
};

pub struct BpfCounters {
    map: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for BpfCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfCounters").finish_non_exhaustive()
    }
}

impl BpfCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map }
    }

    /// Every counter, summed over CPUs, in [`counter::NAMES`] order. A counter
    /// that cannot be read reads as 0.
    pub fn read(&self) -> [u64; counter::COUNT as usize] {
        let mut totals = [0u64; counter::COUNT as usize];
        for (index, total) in (0u32..).zip(totals.iter_mut()) {
            if let Ok(values) = self.map.get(&index, 0) {
                *total = values.iter().sum();
            }
        }
        totals
    }
}

impl Collector for BpfCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let totals = self.read();
        let redirected = ConstCounter::new(totals[counter::REDIRECTED as usize]);
        redirected.encode(encoder.encode_descriptor(
            "connections_redirected",
            "Connects redirected to the proxy by the eBPF programs",
            None,
            redirected.metric_type(),
        )?)?;
        let outcomes = encoder.encode_descriptor(
            "bpf_events",
            "Outcomes counted by the eBPF programs, by event",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let mut family = outcomes;
        for (name, total) in counter::NAMES.iter().zip(totals) {
            let labels = [("event", *name)];
            ConstCounter::new(total).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
