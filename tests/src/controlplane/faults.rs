//! Faults of the control plane that tests inflict on purpose: the API
//! server restarted, hung, or away while the cluster moves on and etcd
//! compacts the history its clients would resume from.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use super::{ControlPlane, ETCD, tail, write_kubeconfig_for};
use crate::cmd::Proc;

impl ControlPlane {
    /// Stops the API server (SIGTERM, as a rolling control-plane update
    /// does; SIGKILL after 5 s, as the kubelet does after a grace period:
    /// its graceful shutdown can outlast that with watches open) and starts
    /// it again on the same etcd; returns once it is ready.
    pub fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        self.start_apiserver();
    }

    fn stop_apiserver(&mut self) {
        let at = self.index("kube-apiserver");
        stop(&mut self.components[at].proc);
    }

    fn start_apiserver(&mut self) {
        let at = self.index("kube-apiserver");
        let (args, log) = (
            self.components[at].args.clone(),
            self.components[at].log.clone(),
        );
        let proc = self.start_process("kube-apiserver", &args, &log);
        self.components[at].proc = proc;
        self.wait_apiserver();
    }

    /// The cluster moves on while the agent cannot see it: the API server
    /// stops; a second one, on a port only `while_away`'s kubeconfig names,
    /// serves the changes `while_away` makes; etcd's history is then
    /// compacted to its current revision, and the API server comes back. A
    /// client resuming a watch from before is told 410 Gone (its version is
    /// compacted) and must list again.
    pub fn change_while_away(&mut self, while_away: impl FnOnce(&Self, &Path)) {
        self.stop_apiserver();
        let at = self.index("kube-apiserver");
        let args: Vec<String> = self.components[at]
            .args
            .iter()
            .map(|a| a.replace("--secure-port=6443", "--secure-port=6444"))
            .collect();
        let log = self.dir.join("kube-apiserver-away.log");
        let mut away = self.start_process("kube-apiserver", &args, &log);
        let kubeconfig = self.dir.join("away.kubeconfig");
        write_kubeconfig_for(
            &kubeconfig,
            "https://127.0.0.1:6444",
            &self.certs.ca_cert,
            &format!(
                "client-certificate: {}\n    client-key: {}",
                self.certs.admin_cert.display(),
                self.certs.admin_key.display()
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self
            .kubectl_as(&kubeconfig, &["get", "--raw", "/readyz"], None)
            .status
            .success()
        {
            assert!(
                away.try_wait().is_none() && Instant::now() < deadline,
                "the stand-in API server did not start:\n{}",
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        while_away(self, &kubeconfig);
        self.compact_etcd();
        stop(&mut away);
        self.start_apiserver();
    }

    /// Compacts etcd's history up to its current revision (through etcd's
    /// JSON gateway, as `etcdctl compact` does over gRPC).
    fn compact_etcd(&self) {
        let range = self.in_node(
            "curl",
            &[
                "-sf",
                "-X",
                "POST",
                &format!("{ETCD}/v3/kv/range"),
                "-d",
                r#"{"key":"AA=="}"#,
            ],
        );
        let reply: serde_json::Value =
            serde_json::from_slice(&range.stdout).expect("etcd range reply");
        let revision = reply["header"]["revision"]
            .as_str()
            .expect("etcd revision")
            .to_owned();
        let compacted = self.in_node(
            "curl",
            &[
                "-sf",
                "-X",
                "POST",
                &format!("{ETCD}/v3/kv/compaction"),
                "-d",
                &format!(r#"{{"revision":"{revision}","physical":true}}"#),
            ],
        );
        assert!(compacted.status.success(), "etcd compaction: {compacted:?}");
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to the API server: it holds its
    /// connections but answers nothing.
    pub fn freeze_apiserver(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        self.components[self.index("kube-apiserver")]
            .proc
            .signal(signal);
    }
}

/// SIGTERM, then SIGKILL after 5 s (the API server's graceful shutdown can
/// outlast that with watches open; a kubelet's grace period would end too).
fn stop(proc: &mut Proc) {
    proc.signal(libc::SIGTERM);
    if proc.wait_timeout(Duration::from_secs(5)).is_none() {
        proc.signal(libc::SIGKILL);
        proc.wait_timeout(Duration::from_secs(10))
            .expect("process gone after SIGKILL");
    }
}
