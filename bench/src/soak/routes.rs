//! The routes files `bench soak` writes: the soak's own routes at each churn
//! step, and the scaled table (thousands of services and sandboxes) whose
//! rebuild time and memory it measures.
//!
//! The scaled table's addresses are in 100.64.0.0/10 (shared address
//! space): they are written into the `STEERED` map, but no traffic of the
//! benchmark goes to them, and no namespace it makes has a route there.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
};

use crate::stage::peers::{BACKEND_PORT, KEY};

/// The churned sandbox's routing key.
pub const CHURN_KEY: &str = "soak-churn";
/// Filler sandboxes added and removed along with the churned one: up to
/// this many, varying by step.
const FILLERS: u64 = 8;
/// Services each sandbox of the scaled table forks.
pub const FORKS_PER_SANDBOX: u32 = 5;

/// Where the soak's backends are.
#[derive(Debug, Clone, Copy)]
pub struct SoakRoutes {
    pub base: Ipv4Addr,
    pub fork: SocketAddrV4,
    pub fork2: SocketAddrV4,
}

impl SoakRoutes {
    /// The soak's routes at churn step `step`: the stable sandbox always;
    /// the churned sandbox (key [`CHURN_KEY`], fork `fork2`) on even steps;
    /// and `step % 8` filler sandboxes with keys no request carries.
    pub fn at(&self, step: u64) -> String {
        let mut yaml = self.header();
        yaml += "sandboxes:\n";
        yaml += &sandbox("stable", KEY, "bench/backend", &self.fork.to_string());
        if step.is_multiple_of(2) {
            yaml += &sandbox("churn", CHURN_KEY, "bench/backend", &self.fork2.to_string());
        }
        for n in 0..step % FILLERS {
            let name = format!("filler-{n}");
            yaml += &sandbox(&name, &name, "bench/backend", &self.fork2.to_string());
        }
        yaml
    }

    /// The soak's routes (stable sandbox only) plus `services` more services
    /// and `sandboxes` sandboxes, each forking [`FORKS_PER_SANDBOX`] of them
    /// (round robin), every fork with one endpoint of its own.
    pub fn scaled(&self, services: u32, sandboxes: u32) -> String {
        let mut yaml = self.header();
        for n in 0..services {
            let _ = write!(
                yaml,
                "  - name: svc-{n}\n    namespace: scale\n    addresses: [\"{}\"]\n    ports:\n      - port: 80\n        protocol: http\n",
                offset(Ipv4Addr::new(100, 64, 0, 0), n)
            );
        }
        yaml += "sandboxes:\n";
        yaml += &sandbox("stable", KEY, "bench/backend", &self.fork.to_string());
        let mut endpoint = 0;
        for s in 0..sandboxes {
            let _ = write!(
                yaml,
                "  - name: sb-{s}\n    routingKey: sb-{s}\n    forks:\n"
            );
            for f in 0..FORKS_PER_SANDBOX {
                let service = (s * FORKS_PER_SANDBOX + f) % services.max(1);
                let ip = offset(Ipv4Addr::new(100, 96, 0, 0), endpoint);
                endpoint += 1;
                let _ = write!(
                    yaml,
                    "      - service: scale/svc-{service}\n        endpoints: [\"{ip}:8080\"]\n"
                );
            }
        }
        yaml
    }

    fn header(&self) -> String {
        format!(
            "services:\n  - name: backend\n    namespace: bench\n    addresses: [\"{}\"]\n    ports:\n      - port: {BACKEND_PORT}\n        protocol: http\n",
            self.base
        )
    }
}

fn sandbox(name: &str, key: &str, service: &str, endpoint: &str) -> String {
    format!(
        "  - name: {name}\n    routingKey: {key}\n    forks:\n      - service: {service}\n        endpoints: [\"{endpoint}\"]\n"
    )
}

fn offset(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> SoakRoutes {
        SoakRoutes {
            base: Ipv4Addr::new(10, 248, 0, 2),
            fork: SocketAddrV4::new(Ipv4Addr::new(10, 248, 0, 3), 8080),
            fork2: SocketAddrV4::new(Ipv4Addr::new(10, 248, 0, 4), 8080),
        }
    }

    #[test]
    fn the_churned_sandbox_comes_and_goes() {
        assert!(routes().at(0).contains(CHURN_KEY));
        assert!(!routes().at(1).contains(CHURN_KEY));
        assert!(routes().at(7).contains("filler-6"));
        assert!(!routes().at(8).contains("filler-0"));
    }

    #[test]
    fn the_scaled_table_has_what_it_says() {
        let yaml = routes().scaled(100, 10);
        assert_eq!(yaml.matches("namespace: scale").count(), 100);
        assert_eq!(yaml.matches("routingKey: sb-").count(), 10);
        assert_eq!(
            yaml.matches("service: scale/").count(),
            10 * FORKS_PER_SANDBOX as usize
        );
        assert!(yaml.contains("\"100.64.0.99\""));
    }
}
