//! Talking to the control plane as its clients do: the built `kubectl`
//! (at the API server's version) run in the node's namespaces, as the admin
//! or as a ServiceAccount, and the kubeconfigs they use.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use super::{APISERVER, ControlPlane, tool};

impl ControlPlane {
    /// `kubectl` (the built one, at the API server's version) as the admin.
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.admin_kubeconfig, args, None)
    }

    /// `kubectl` as the admin; panics with its output if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        checked(args, self.kubectl_output(args))
    }

    /// `kubectl apply -f -` of `manifest` (YAML or JSON) as the admin.
    pub fn apply(&self, manifest: &str) -> String {
        let args = ["apply", "-f", "-"];
        checked(
            &args,
            self.kubectl_as(&self.admin_kubeconfig, &args, Some(manifest)),
        )
    }

    /// A `kubectl` command as the admin, to spawn (a stream, or a command
    /// running while the test acts).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(&self.spec.enter)
            .arg("--")
            .arg(tool("kubectl"))
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args);
        command
    }

    /// `kubectl` with `kubeconfig`, `input` on its stdin.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .args(&self.spec.enter)
            .arg("--")
            .arg(tool("kubectl"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(input) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("kubectl stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    /// Writes an admin kubeconfig at `path` for the API server at `server`
    /// (e.g. the node IP, for clients outside the node's namespace).
    pub fn write_admin_kubeconfig(&self, path: &Path, server: &str) {
        write_kubeconfig_for(
            path,
            server,
            &self.certs.ca_cert,
            &format!(
                "client-certificate: {}\n    client-key: {}",
                self.certs.admin_cert.display(),
                self.certs.admin_key.display()
            ),
        );
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name`
    /// only (a token from the TokenRequest API), so RBAC applies to it.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"]);
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.certs.ca_cert,
            &format!("token: {}", token.trim()),
        );
        path
    }
}

pub(super) fn write_kubeconfig(path: &Path, ca: &Path, user: &str) {
    write_kubeconfig_for(path, APISERVER, ca, user);
}

pub(super) fn write_kubeconfig_for(path: &Path, server: &str, ca: &Path, user: &str) {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: test
  user:
    {user}
contexts:
- name: test
  context:
    cluster: test
    user: test
current-context: test
",
        ca = ca.display()
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn checked(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "kubectl {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
