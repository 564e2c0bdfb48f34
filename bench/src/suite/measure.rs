//! One measured interval of a suite's load against one peer.

use std::{net::SocketAddr, sync::atomic::Ordering};

use anyhow::bail;
use detour_tests::{Agent, netns::Netns};

use crate::{
    daemon::{Accounting, CpuTime, Daemon},
    http::checks::BackendStatus,
    procs::INTERRUPTED,
    stage::peers::Peer,
};

/// What one interval measured: the load's own result (`L`: wrk's or
/// h2load's), the proxy's CPU time over it (none for direct), and the
/// connections and requests the fork backend accepted during it.
#[derive(Debug, Clone, Copy)]
pub struct Measured<L> {
    pub load: L,
    pub cpu: Option<CpuTime>,
    pub backend_conns: u64,
    pub backend_requests: u64,
}

/// What a suite measures against: each peer's address and CPU accounting,
/// the daemons that must stay alive, the fork backend, and the agent (whose
/// log explains a failed interval).
pub struct Probe<'a> {
    pub fork: &'a Netns,
    pub addrs: [SocketAddr; Peer::ALL.len()],
    pub accts: [Option<&'a Accounting>; Peer::ALL.len()],
    pub daemons: Vec<&'a Daemon>,
    pub agent: &'a Agent,
}

impl Probe<'_> {
    /// Runs `load` against `peer`'s address and measures around it;
    /// `requests` says how many requests the load completed. `what` names
    /// the interval and its load in errors (`keep-alive / nginx: wrk`).
    pub fn measure<L>(
        &self,
        peer: Peer,
        what: &str,
        load: impl FnOnce(SocketAddr) -> anyhow::Result<L>,
        requests: impl Fn(&L) -> u64,
    ) -> anyhow::Result<Measured<L>> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        for daemon in &self.daemons {
            daemon.check_alive()?;
        }
        let acct = self.accts[peer as usize];
        let backend_before = BackendStatus::read(self.fork)?;
        let before = acct.map(Accounting::cpu).transpose()?;
        let load = load(self.addrs[peer as usize])?;
        let after = acct.map(Accounting::cpu).transpose()?;
        let (backend_conns, backend_requests) =
            BackendStatus::read(self.fork)?.since(&backend_before);
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if requests(&load) == 0 {
            bail!(
                "{what} completed no request; agent log:\n{}",
                self.agent.logs()
            );
        }
        Ok(Measured {
            load,
            cpu: before.zip(after).map(|(b, a)| a.since(&b)),
            backend_conns,
            backend_requests,
        })
    }
}
