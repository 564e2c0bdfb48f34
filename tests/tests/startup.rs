//! Start-up failures end with one clear error line and a non-zero exit.

use std::process::Command;

use detour_tests::{detour_bin, require_root, unique_name};

fn run_agent(routes: &str, cgroup: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(unique_name("detour-startup-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("routes.yaml");
    std::fs::write(&path, routes).expect("write routes");
    let output = Command::new(detour_bin())
        .args([
            "agent",
            "--routes",
            &path.display().to_string(),
            "--cgroup",
            cgroup,
        ])
        .args([
            "--proxy-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run detour");
    let _ = std::fs::remove_dir_all(&dir);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[test]
fn bad_routes_file_stops_the_agent_with_the_field_and_line() {
    let (ok, stderr) = run_agent(
        "services:\n  - name: a\n    addresses: [nope]\n    ports: [{port: 1}]\n",
        "/tmp",
    );
    assert!(!ok);
    let line = last_line(&stderr);
    assert!(line.starts_with("detour: routes file"), "{stderr}");
    assert!(
        line.contains("services[0].addresses[0]") && line.contains("line 3"),
        "{stderr}"
    );
}

#[test]
fn a_path_that_is_not_cgroup_v2_is_refused() {
    if !require_root() {
        return;
    }
    let (ok, stderr) = run_agent("", "/tmp");
    assert!(!ok);
    assert!(
        last_line(&stderr).contains("/tmp is not a cgroup v2 directory"),
        "{stderr}"
    );
}

#[test]
fn a_missing_cgroup_is_refused() {
    if !require_root() {
        return;
    }
    let (ok, stderr) = run_agent("", "/sys/fs/cgroup/unified/detour-no-such-cgroup");
    assert!(!ok);
    assert!(
        last_line(&stderr).contains("cannot open cgroup"),
        "{stderr}"
    );
}

#[test]
fn not_root_is_refused_with_what_to_do() {
    if !require_root() {
        return;
    }
    // Run a copy of the binary as nobody (the original may sit under /root).
    let dir = std::env::temp_dir().join(unique_name("detour-nobody-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let binary = dir.join("detour");
    std::fs::copy(detour_bin(), &binary).expect("copy detour");
    let routes = dir.join("routes.yaml");
    std::fs::write(&routes, "").expect("write routes");
    for path in [&dir, &binary, &routes] {
        let mode = if path.is_dir() || path == &binary {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args([
            "agent",
            "--routes",
            &routes.display().to_string(),
            "--cgroup",
            "/sys/fs/cgroup",
        ])
        .args([
            "--proxy-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run setpriv");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(last_line(&stderr).contains("must run as root"), "{stderr}");
}
