//! Load from the client pod while a test changes the node: real curl, one
//! request every `1/rate` seconds, each answered body (`hello from <pod>`)
//! one line of output, each failure one `curl: (N) ...` line.
//!
//! Keep-alive loads reuse one connection for as long as it lives; a load
//! with `Connection: close` opens a new connection per request (detour
//! closes the client's connection after the response and keeps its own
//! upstream one).

use std::{
    path::PathBuf,
    process::{Child, Stdio},
};

use detour_tests::{node::KubeNode, unique_name};

use super::setup::cluster_ip;

/// A running load; its output goes to files (a pipe left unread would
/// stall curl).
pub struct Load {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// What a load saw, in order.
#[derive(Debug)]
pub struct Seen {
    pub answers: Vec<String>,
    pub failures: Vec<String>,
}

impl Seen {
    /// Answers that did not come from a pod whose answer starts with `from`.
    pub fn not_from(&self, from: &str) -> Vec<&String> {
        self.answers
            .iter()
            .filter(|a| !a.starts_with(from))
            .collect()
    }
}

impl Load {
    /// `count` requests from the client pod to the `reviews` Service with
    /// `headers`, `rate` per second.
    pub fn start(node: &KubeNode, headers: &[&str], count: u32, rate: u32) -> Self {
        let url = format!("http://{}/?n=[1-{count}]", cluster_ip(node));
        let rate = format!("{rate}/s");
        let mut args = vec![
            "exec", "client", "--", "curl", "-sS", "-m", "5", "--rate", &rate,
        ];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(&url);
        let base = std::env::temp_dir().join(unique_name("detour-load-"));
        let (out, err) = (base.with_extension("out"), base.with_extension("err"));
        let child = node
            .plane
            .kubectl_command(&args)
            .stdout(Stdio::from(
                std::fs::File::create(&out).expect("load output"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&err).expect("load errors"),
            ))
            .spawn()
            .expect("kubectl exec curl");
        Self { child, out, err }
    }

    /// Waits for the last request.
    pub fn finish(mut self) -> Seen {
        let _ = self.child.wait();
        self.seen()
    }

    /// Stops now: what was seen so far.
    pub fn stop(mut self) -> Seen {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen()
    }

    /// What was seen so far, the load running on.
    pub fn so_far(&mut self) -> Seen {
        self.seen()
    }

    fn seen(&mut self) -> Seen {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        Seen {
            answers: out.lines().map(str::to_owned).collect(),
            failures: err
                .lines()
                .filter(|line| line.starts_with("curl:"))
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}
