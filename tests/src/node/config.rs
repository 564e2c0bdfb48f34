//! The real node's configuration files: containerd's, the CNI network's,
//! the kubelet's and kube-proxy's. Each setting that differs from a default
//! says why; most are what this machine kind needs (see tests/README.md,
//! "The real node").

use std::path::Path;

use super::{NODE_IP, NODE_NAME, POD_CIDR};

/// containerd's socket, in the node's own `/run`.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The pod sandbox image containerd runs (built from source, never pulled).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.2";

/// containerd 1.6 (config version 2) with its CRI plugin.
pub fn containerd(dir: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "/run/containerd"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine kind lacks CAP_SYS_RESOURCE: runc cannot lower a pod's
  # oom_score_adj below its own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet's cgroup driver: cgroupfs (no systemd here).
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        root = dir.join("containerd").display(),
        cni = dir.join("cni").display(),
    )
}

/// The pod network: a bridge with the node as gateway, addresses from
/// [`POD_CIDR`] (host-local, its state in the node's directory).
pub fn cni(dir: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "node-bridge",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{POD_CIDR}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}],
        "dataDir": "{ipam}"
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"#,
        ipam = dir.join("ipam").display(),
    )
}

/// The kubelet, as this machine kind needs it.
pub fn kubelet(ca: &Path, cert: &Path, key: &Path) -> String {
    let root = super::host::CGROUP_ROOT;
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization: {{mode: Webhook}}
address: "{NODE_IP}"
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: "{cert}"
tlsPrivateKeyFile: "{key}"
containerRuntimeEndpoint: "unix://{CONTAINERD_SOCKET}"
# The hybrid cgroup layout of this kernel (v1 controllers, v2 at
# /sys/fs/cgroup/unified) is deprecated: run anyway.
cgroupDriver: cgroupfs
failCgroupV1: false
# Pods under a cgroup of the node's own (as kind's /kubelet): kubepods is
# /sys/fs/cgroup/unified/{root}/kubepods, and the cgroup above it is one a
# test may attach to (never a hierarchy's root).
cgroupRoot: /{root}
failSwapOn: false
# Images here cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
serializeImagePulls: false
# No resolver for pods: nothing here resolves names, and no query leaves.
resolvConf: ""
clusterDomain: cluster.local
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// kube-proxy in iptables mode, leaving the machine-wide conntrack
/// settings alone.
pub fn kube_proxy(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: "{kubeconfig}"}}
mode: iptables
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_CIDR}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# 0: leave nf_conntrack_max and the TCP timeouts as they are (the first is
# machine-wide).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  syncPeriod: 10s
  minSyncPeriod: 0s
"#,
        kubeconfig = kubeconfig.display(),
    )
}
