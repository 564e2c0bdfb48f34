//! `detour bpf maps` / `detour bpf counters`: the kernel side, read from the
//! maps the agent pins (default `/sys/fs/bpf/detour`), never from the agent,
//! so both work while it is down: after a crash they show what the programs
//! last counted and which destinations were steered.
//!
//! The JSON of both verbs is defined here ([`Maps`], [`Counters`]); its
//! field names are stable.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use clap::{Args, Subcommand};
use detour_common::{CONFIG_HAS_PROXY4, CONFIG_HAS_PROXY6, SockKey, counter};
use serde::{Deserialize, Serialize};

use super::{
    output::{self, Global},
    table::{self, Table},
};
use crate::{
    admin::api::MapStatus,
    datapath::pinned::{self, PinnedError, PinnedMaps},
    defaults,
};

/// Read the eBPF maps pinned by the agent (works while the agent is down).
#[derive(Debug, Args)]
pub struct BpfArgs {
    #[command(subcommand)]
    command: BpfCommand,

    /// Where the agent pins its maps (its `--pin-dir`).
    #[arg(long, global = true, env = "DETOUR_PIN_DIR", value_name = "DIR", default_value = defaults::PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum BpfCommand {
    /// Show the pinned maps: sizes, steered destinations, configuration
    ///
    /// Also the redirected connects the proxy has not accepted yet. Services
    /// are shown by the agent's number for them (names live in the agent).
    ///
    /// Examples:
    ///   detour bpf maps
    ///   detour bpf maps --pin-dir /sys/fs/bpf/detour -o json | jq '.steered | length'
    #[command(verbatim_doc_comment)]
    Maps,
    /// Show the programs' outcome counters, summed over CPUs
    ///
    /// They survive the agent (pinned) until it starts again.
    ///
    /// Examples:
    ///   detour bpf counters
    ///   detour bpf counters -o json | jq .counters.redirected
    #[command(verbatim_doc_comment)]
    Counters,
}

/// `detour bpf maps -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maps {
    pub pin_dir: String,
    /// Every pinned map: `name`, `entries`, `max_entries`.
    pub maps: Vec<MapStatus>,
    /// `STEERED`: destinations whose connects are redirected, sorted.
    pub steered: Vec<SteeredEntry>,
    /// `ORIG_BY_PEER`: connects redirected but not yet accepted by the
    /// proxy, sorted by client.
    pub pending: Vec<PendingEntry>,
    /// `CONFIG`: where the programs redirect to.
    pub config: ConfigEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteeredEntry {
    pub destination: SocketAddr,
    /// The agent's number for the service (names live in the agent only).
    pub service_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub client: SocketAddr,
    pub original_dst: SocketAddr,
    pub service_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub proxy_ipv4: Option<SocketAddr>,
    pub proxy_ipv6: Option<SocketAddr>,
    /// `SO_MARK` of the agent's own sockets (never redirected).
    pub mark: u32,
}

/// `detour bpf counters -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub pin_dir: String,
    /// By name: `redirected`, `not_steered`, `own_socket`,
    /// `no_proxy_family`, `errors`, `rekeyed`, `record_missing`, `relayed`,
    /// `relay_missed`.
    pub counters: BTreeMap<String, u64>,
}

/// What each counter means, in [`counter::NAMES`] order.
const MEANINGS: [&str; counter::COUNT as usize] = [
    "connects redirected to the proxy",
    "connects to destinations not steered (untouched)",
    "the agent's own upstream connects (untouched)",
    "steered, but no proxy address of that family",
    "internal errors (map full...): let through",
    "redirects re-keyed by client address at SYN",
    "proxy connects with no record (evicted or direct): closed",
    "segments relayed in the kernel between spliced sockets",
    "segments of relayed sockets passed to the proxy (no peer)",
];

pub fn run(args: &BpfArgs, global: &Global) -> anyhow::Result<()> {
    // A directory we may not look into (bpffs is often 0700) must not read
    // as "no pinned maps".
    if let Err(error) = std::fs::metadata(args.pin_dir.join(detour_common::maps::STEERED))
        && error.kind() == std::io::ErrorKind::PermissionDenied
    {
        return Err(PinnedError::Permission {
            path: args.pin_dir.clone(),
        }
        .into());
    }
    let read = pinned::read(&args.pin_dir)?;
    let pin_dir = args.pin_dir.display().to_string();
    match args.command {
        BpfCommand::Maps => output::print(global.output, &maps(pin_dir, &read), render_maps),
        BpfCommand::Counters => {
            output::print(global.output, &counters(pin_dir, &read), render_counters)
        }
    }
}

pub fn maps(pin_dir: String, read: &PinnedMaps) -> Maps {
    let config = &read.config;
    let proxy4 = (config.flags & CONFIG_HAS_PROXY4 != 0)
        .then(|| SockKey::v4(config.proxy_ip4, config.proxy_port4).socket_addr());
    let proxy6 = (config.flags & CONFIG_HAS_PROXY6 != 0)
        .then(|| SockKey::v6(config.proxy_ip6, config.proxy_port6).socket_addr());
    let mut steered: Vec<SteeredEntry> = read
        .steered
        .iter()
        .map(|(key, steered)| SteeredEntry {
            destination: key.socket_addr(),
            service_id: steered.service_id,
        })
        .collect();
    steered.sort_by_key(|entry| entry.destination);
    let mut pending: Vec<PendingEntry> = read
        .orig_by_peer
        .iter()
        .map(|(key, orig)| PendingEntry {
            client: key.socket_addr(),
            original_dst: orig.dst.socket_addr(),
            service_id: orig.service_id,
        })
        .collect();
    pending.sort_by_key(|entry| entry.client);
    Maps {
        pin_dir,
        maps: read
            .sizes()
            .into_iter()
            .map(|(name, entries, max)| MapStatus {
                name: name.to_owned(),
                entries: entries as u64,
                max_entries: u64::from(max),
            })
            .collect(),
        steered,
        pending,
        config: ConfigEntry {
            proxy_ipv4: proxy4,
            proxy_ipv6: proxy6,
            mark: config.mark,
        },
    }
}

pub fn counters(pin_dir: String, read: &PinnedMaps) -> Counters {
    Counters {
        pin_dir,
        counters: counter::NAMES
            .iter()
            .zip(read.counters)
            .map(|(name, value)| ((*name).to_owned(), value))
            .collect(),
    }
}

pub fn render_maps(maps: &Maps) -> String {
    let mut sizes = Table::new(&["MAP", "ENTRIES", "MAX"]).right(1).right(2);
    for map in &maps.maps {
        sizes.row([
            map.name.clone(),
            map.entries.to_string(),
            map.max_entries.to_string(),
        ]);
    }
    let mut out = format!("Pinned under {}\n\n{}", maps.pin_dir, sizes.render());

    let or_none = |addr: Option<SocketAddr>| addr.map_or("none".to_owned(), |a| a.to_string());
    out.push_str("\nCONFIG\n");
    out.push_str(&table::fields(&[
        ("Proxy (IPv4)", or_none(maps.config.proxy_ipv4)),
        ("Proxy (IPv6)", or_none(maps.config.proxy_ipv6)),
        (
            "Own mark",
            format!(
                "{:#x} (the agent's sockets: never redirected)",
                maps.config.mark
            ),
        ),
    ]));

    out.push_str("\nSTEERED: destinations redirected to the proxy\n");
    if maps.steered.is_empty() {
        out.push_str("(none: no service has a fork)\n");
    } else {
        let mut steered = Table::new(&["DESTINATION", "SERVICE ID"]).right(1);
        for entry in &maps.steered {
            steered.row([entry.destination.to_string(), entry.service_id.to_string()]);
        }
        out.push_str(&steered.render());
    }

    out.push_str("\nORIG_BY_PEER: redirected connects not yet accepted by the proxy\n");
    if maps.pending.is_empty() {
        out.push_str("(none)\n");
    } else {
        let mut pending = Table::new(&["CLIENT", "ORIGINAL DST", "SERVICE ID"]).right(2);
        for entry in &maps.pending {
            pending.row([
                entry.client.to_string(),
                entry.original_dst.to_string(),
                entry.service_id.to_string(),
            ]);
        }
        out.push_str(&pending.render());
    }
    out
}

pub fn render_counters(counters: &Counters) -> String {
    let mut out = Table::new(&["COUNTER", "VALUE", "MEANING"]).right(1);
    // In the programs' own order, which reads as a story; JSON is by name.
    for (name, meaning) in counter::NAMES.iter().zip(MEANINGS) {
        let value = counters.counters.get(*name).copied().unwrap_or(0);
        out.row([(*name).to_owned(), value.to_string(), meaning.to_owned()]);
    }
    format!("Pinned under {}\n\n{}", counters.pin_dir, out.render())
}
