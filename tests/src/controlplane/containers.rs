//! What the node simulator runs for each image (the container's first port
//! is the server's port, 8080 when none is declared; `SERVED_BY` in the
//! container's env names it in responses, else the pod's name):
//!
//! | image | process |
//! |---|---|
//! | `detour.dev/test-echo` (any tag) | `tests/servers/echo.py` |
//! | `detour.dev/test-host` (any tag) | the container's own command, from the host's filesystem, with its volumes ([`super::host_image`]) |

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::host_image::{self, HOST_IMAGE};
use crate::{
    cgroup::Cgroup,
    cmd::Proc,
    topology::{Pod, attach_pod},
};

const ECHO_IMAGE: &str = "detour.dev/test-echo";

/// A pod this node runs. Fields drop in order: the process, then its cgroup.
pub struct Running {
    _process: Proc,
    _cgroup: Cgroup,
    pub pod: Pod,
    pub ready: Option<bool>,
}

/// Starts the pod's container in `cgroup`, its volumes under `data`;
/// `None` for an image this node cannot run, or a pod that fails to start.
pub fn start(node: &str, base: &str, host: u8, at: (&Path, &Path), pod: &Value) -> Option<Running> {
    let (cgroup, data) = at;
    let container = &pod["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or("pod");
    let echo = image.starts_with(ECHO_IMAGE);
    if !echo && !image.starts_with(HOST_IMAGE) {
        eprintln!("node simulator: no process for image {image:?}; pod {name} left pending");
        return None;
    }
    let port = container["ports"][0]["containerPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(8080);
    let served_by = container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "SERVED_BY"))
        .and_then(|e| e["value"].as_str())
        .unwrap_or(name)
        .to_owned();
    let net = attach_pod(node, &format!("{base}-k{host}"), &served_by, host);
    let cgroup = Cgroup::at(cgroup);
    let process = if echo {
        let process = net.echo_server(port);
        cgroup.adopt(process.pid());
        process
    } else {
        let netns = PathBuf::from(net.netns.path());
        let started = host_image::start(pod, &netns, cgroup.path(), data).and_then(|child| {
            let process = Proc::new(child);
            host_image::wait_ready(pod, &netns, net.ip4.into())?;
            Ok(process)
        });
        match started {
            Ok(process) => process,
            Err(error) => {
                eprintln!("node simulator: pod {name}: {error}; pod left pending");
                return None;
            }
        }
    };
    Some(Running {
        _process: process,
        _cgroup: cgroup,
        pod: net,
        ready: None,
    })
}
