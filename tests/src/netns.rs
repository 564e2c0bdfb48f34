//! A network namespace that exists exactly as long as its guard.

use crate::cmd;

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` (under /run/netns) with its loopback up.
    pub fn new(name: &str) -> Self {
        cmd::quiet("ip", &["netns", "del", name]);
        cmd::run("ip", &["netns", "add", name]);
        let netns = Self {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `nsenter --net=`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Runs a sysctl inside the namespace.
    pub fn sysctl(&self, setting: &str) {
        cmd::run(
            "nsenter",
            &[&format!("--net={}", self.path()), "sysctl", "-qw", setting],
        );
    }

    /// Runs a command inside the namespace (not in any test cgroup).
    pub fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        let net = format!("--net={}", self.path());
        let mut full = vec![net.as_str(), "--", program];
        full.extend_from_slice(args);
        cmd::output("nsenter", &full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        cmd::quiet("ip", &["netns", "del", &self.name]);
    }
}
