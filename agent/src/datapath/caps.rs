//! The capabilities the agent needs, checked before it touches anything, so
//! that a missing one is named in one line instead of surfacing as an
//! `EPERM` (or a verifier log) from deep inside the loader.
//!
//! Measured on Linux 6.18 (see deploy/README.md): `CAP_BPF` to create maps
//! and load programs, `CAP_NET_ADMIN` for cgroup socket programs and
//! `SO_MARK`, `CAP_PERFMON` for the pointer arithmetic the verifier allows
//! only to "root". `CAP_SYS_ADMIN` stands in for `BPF` and `PERFMON`.

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, from /proc/self/status.
fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The needed capabilities this process lacks, by name; empty when it may run.
pub fn missing() -> Vec<&'static str> {
    missing_from(effective())
}

fn missing_from(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !admin {
        missing.push("CAP_PERFMON");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_set_or_sys_admin_suffices() {
        let bit = |cap: u32| 1u64 << cap;
        assert!(missing_from(bit(CAP_BPF) | bit(CAP_NET_ADMIN) | bit(CAP_PERFMON)).is_empty());
        assert!(missing_from(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN)).is_empty());
        assert_eq!(missing_from(bit(CAP_SYS_ADMIN)), ["CAP_NET_ADMIN"]);
        assert_eq!(missing_from(0), ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
    }
}
