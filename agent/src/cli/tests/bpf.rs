//! `bpf maps` and `bpf counters` from a fixed pinned-map snapshot.

use super::{addr, assert_text};
use crate::cli::bpf;

fn pinned_snapshot() -> crate::datapath::pinned::PinnedMaps {
    use detour_common::{
        CONFIG_HAS_PROXY4, CONFIG_HAS_PROXY6, Config, OrigDst, SockKey, Steered, ip6_words,
    };
    let proxy6: std::net::Ipv6Addr = "fd00::5".parse().expect("ip6");
    crate::datapath::pinned::PinnedMaps {
        steered: vec![
            (
                SockKey::new(addr("10.96.0.10:8080")),
                Steered {
                    service_id: 2,
                    flags: 0,
                },
            ),
            (
                SockKey::new(addr("[fd00:96::10]:8080")),
                Steered {
                    service_id: 2,
                    flags: 0,
                },
            ),
        ],
        orig_by_cookie: 0,
        orig_by_peer: vec![(
            SockKey::new(addr("10.244.0.12:40312")),
            OrigDst {
                dst: SockKey::new(addr("10.96.0.10:8080")),
                service_id: 2,
                family: detour_common::AF_INET,
                _pad: 0,
                source_sandbox: 0,
                netns: 4096,
            },
        )],
        config: Config {
            proxy_ip4: u32::from_ne_bytes([10, 0, 0, 5]),
            proxy_ip6: ip6_words(proxy6.octets()),
            proxy_port4: 15001u16.to_be(),
            proxy_port6: 15001u16.to_be(),
            mark: 0x6474_0000,
            flags: CONFIG_HAS_PROXY4 | CONFIG_HAS_PROXY6,
        },
        counters: [12, 340, 12, 0, 0, 12, 1, 5000, 0],
        max_entries: [16384, 16384, 65536, 1, 9],
    }
}

#[test]
fn bpf_maps_render_sizes_config_and_entries() {
    let maps = bpf::maps("/sys/fs/bpf/detour".into(), &pinned_snapshot());
    assert_eq!(
        maps.config.proxy_ipv4,
        Some(addr("10.0.0.5:15001")),
        "network-order config decoded"
    );
    assert_text(
        &bpf::render_maps(&maps),
        "\
Pinned under /sys/fs/bpf/detour

MAP             ENTRIES    MAX
STEERED               2  16384
ORIG_BY_COOKIE        0  16384
ORIG_BY_PEER          1  65536
CONFIG                1      1
COUNTERS              9      9

CONFIG
Proxy (IPv4):  10.0.0.5:15001
Proxy (IPv6):  [fd00::5]:15001
Own mark:      0x64740000 (the agent's sockets: never redirected)

STEERED: destinations redirected to the proxy
DESTINATION         SERVICE ID
10.96.0.10:8080              2
[fd00:96::10]:8080           2

ORIG_BY_PEER: redirected connects not yet accepted by the proxy
CLIENT             ORIGINAL DST     SERVICE ID
10.244.0.12:40312  10.96.0.10:8080           2
",
    );
}

#[test]
fn bpf_counters_render_in_program_order_and_json_by_name() {
    let counters = bpf::counters("/sys/fs/bpf/detour".into(), &pinned_snapshot());
    assert_text(
        &bpf::render_counters(&counters),
        "\
Pinned under /sys/fs/bpf/detour

COUNTER          VALUE  MEANING
redirected          12  connects redirected to the proxy
not_steered        340  connects to destinations not steered (untouched)
own_socket          12  the agent's own upstream connects (untouched)
no_proxy_family      0  steered, but no proxy address of that family
errors               0  internal errors (map full...): let through
rekeyed             12  redirects re-keyed by client address at SYN
record_missing       1  proxy connects with no record (evicted or direct): closed
relayed           5000  segments relayed in the kernel between spliced sockets
relay_missed         0  segments of relayed sockets passed to the proxy (no peer)
",
    );
    assert_eq!(
        serde_json::to_value(&counters).expect("json"),
        serde_json::json!({
            "pin_dir": "/sys/fs/bpf/detour",
            "counters": {
                "redirected": 12, "not_steered": 340, "own_socket": 12,
                "no_proxy_family": 0, "errors": 0, "rekeyed": 12, "record_missing": 1,
                "relayed": 5000, "relay_missed": 0
            }
        })
    );
}
