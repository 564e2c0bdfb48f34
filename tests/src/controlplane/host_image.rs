//! The node simulator's `detour.dev/test-host` image: a container's own
//! `command` and `args`, with its literal `env`, run from the host's
//! filesystem (Debian's packages: PostgreSQL, Redis, Python) as a process of
//! the pod: in its network namespace and its cgroup, and in a mount
//! namespace of its own where each of its `volumeMounts` is its volume
//! bound at `mountPath` (a directory that must exist on the host; the
//! tests use `/mnt`). Init containers run first, in order, each to
//! completion; one that fails leaves the pod pending, as a kubelet does.
//!
//! Volumes, in the simulator's data directory (removed with it):
//! `persistentVolumeClaim` is a directory per claim (`claims/<namespace>/
//! <claim>`), kept across the pod's restarts as a volume would be;
//! `emptyDir` is a directory per pod. Other kinds (the service account
//! token's projected volume) are not mounted.
//!
//! The container is ready once its first declared port accepts a
//! connection, as a TCP readiness probe would say (at most 60 s). Its output
//! goes to `logs/<namespace>_<pod>.log` in the data directory.

use std::{
    ffi::CString,
    net::{SocketAddr, TcpStream},
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The image (any tag).
pub const HOST_IMAGE: &str = "detour.dev/test-host";

/// Runs `pod`'s init containers to completion, then starts its first
/// container; `Err` says why the pod cannot run.
pub fn start(pod: &Value, netns: &Path, cgroup: &Path, data: &Path) -> Result<Child, String> {
    let spec = &pod["spec"];
    for init in spec["initContainers"].as_array().into_iter().flatten() {
        let name = init["name"].as_str().unwrap_or("init");
        let output = command(init, pod, netns, cgroup, data)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("init container {name}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "init container {name} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    let container = &spec["containers"][0];
    let meta = &pod["metadata"];
    let log = data.join("logs").join(format!(
        "{}_{}.log",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    ));
    let open_log = || {
        std::fs::create_dir_all(data.join("logs"))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
    };
    let (out, err) = open_log()
        .and_then(|file| Ok((file.try_clone()?, file)))
        .map_err(|e| format!("{}: {e}", log.display()))?;
    command(container, pod, netns, cgroup, data)?
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("container: {e}"))
}

/// Waits until the container's first port accepts connections at `ip`,
/// asked from inside the pod's network namespace `netns`.
pub fn wait_ready(pod: &Value, netns: &Path, ip: std::net::IpAddr) -> Result<(), String> {
    let Some(port) = pod["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64() else {
        return Ok(());
    };
    let addr = SocketAddr::new(ip, u16::try_from(port).map_err(|e| e.to_string())?);
    let net = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    // A thread of its own enters the pod's namespace, and ends there.
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on an open descriptor; it moves only
        // this thread, which does nothing else.
        if unsafe { libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("nothing listens on {addr} after 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
    .join()
    .map_err(|_| "the readiness thread panicked".to_owned())?
}

/// The container's process, set to enter the pod's namespaces, cgroup and
/// mounts before it starts.
fn command(
    container: &Value,
    pod: &Value,
    netns: &Path,
    cgroup: &Path,
    data: &Path,
) -> Result<Command, String> {
    let argv: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|field| container[*field].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return Err("a test-host container needs a command".to_owned());
    };
    let mut binds = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let (Some(volume), Some(at)) = (mount["name"].as_str(), mount["mountPath"].as_str()) else {
            continue;
        };
        let Some(dir) = volume_dir(pod, volume, data)? else {
            continue;
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        binds.push((c_path(&dir)?, c_path(Path::new(at))?));
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for var in container["env"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (var["name"].as_str(), var["value"].as_str()) {
            command.env(name, value);
        }
    }
    let procs = c_path(&cgroup.join("cgroup.procs"))?;
    let net = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    // SAFETY: between fork and exec the closure makes only system calls, on
    // strings and a descriptor prepared before the fork.
    unsafe {
        command.pre_exec(move || enter(&procs, &net, &binds));
    }
    Ok(command)
}

/// In the child: its cgroup (writing 0 moves the writer), its network
/// namespace, then, if it mounts volumes, a private mount namespace with
/// them bound.
fn enter(
    procs: &CString,
    net: &std::fs::File,
    binds: &[(CString, CString)],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let check = |result: libc::c_int| match result {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    };
    // SAFETY: plain system calls on valid, NUL-terminated strings and an
    // open descriptor.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if written != 1 {
            return Err(std::io::Error::last_os_error());
        }
        check(libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET))?;
        if binds.is_empty() {
            return Ok(());
        }
        check(libc::unshare(libc::CLONE_NEWNS))?;
        let root = c"/";
        check(libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // The copy of every other namespace's name would keep those
        // namespaces alive as long as this container: drop them (a
        // container has no use for them; not a mount point: nothing to do).
        libc::umount2(c"/run/netns".as_ptr(), libc::MNT_DETACH);
        for (source, target) in binds {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
    }
    Ok(())
}

/// The directory behind `pod`'s volume `name`; `None` for a kind this node
/// does not mount (the service account token's projected volume).
fn volume_dir(pod: &Value, name: &str, data: &Path) -> Result<Option<PathBuf>, String> {
    let volume = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .ok_or_else(|| format!("volume {name} is not in the pod's volumes"))?;
    let meta = &pod["metadata"];
    let field = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
        let namespace = field(&meta["namespace"]);
        return Ok(Some(data.join("claims").join(namespace).join(claim)));
    }
    if volume.get("emptyDir").is_some() {
        let uid = field(&meta["uid"]);
        return Ok(Some(data.join("pods").join(uid).join(name)));
    }
    Ok(None)
}

fn c_path(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}
