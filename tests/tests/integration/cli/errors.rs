//! Failures: a non-root user, no TCP listener, no agent, a stale socket, a
//! path that is not a socket, no pins; and the generated completions and
//! man pages.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt},
    process::Command,
};

use detour_tests::{detour_bin, require_root, unique_name};
use serde_json::Value;

use super::setup::{NobodyBinary, Setup, detour, detour_at, failure, json, ok};

#[test]
fn the_admin_socket_refuses_non_root_users_and_is_not_on_tcp() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let socket = agent.admin_socket().display().to_string();
    let meta = std::fs::symlink_metadata(agent.admin_socket()).expect("admin socket");
    assert!(meta.file_type().is_socket(), "{socket} is a socket");
    assert_eq!(meta.mode() & 0o7777, 0o600, "{socket}: mode 0600");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "{socket}: owned by root");
    let nobody = NobodyBinary::new();
    let denied = failure(&nobody.run(&["--socket", &socket, "status"]), 4);
    assert_eq!(
        denied,
        format!("detour: permission denied on {socket}: run as root")
    );
    let pin_dir = agent.pin_dir().display().to_string();
    let denied = failure(&nobody.run(&["bpf", "counters", "--pin-dir", &pin_dir]), 4);
    assert!(
        denied.contains("permission denied") && denied.ends_with("run as root"),
        "{denied}"
    );
    // As root it answers.
    ok(&detour(&agent, &["status"]));

    // The node namespace listens on the proxy and metrics ports only.
    let ss = setup.net.node().exec("ss", &["-ltnH"]);
    let listening = String::from_utf8_lossy(&ss.stdout);
    let mut ports: Vec<&str> = listening
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit(':').next())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports, ["15001", "15020"], "{listening}");
}

#[test]
fn unreachable_agents_fail_with_one_line_and_an_exit_code() {
    let dir = std::env::temp_dir().join(unique_name("detour-cli-errors-"));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let missing = dir.join("missing.sock");
    assert_eq!(
        failure(&detour_at(&missing, &["status"]), 3),
        format!(
            "detour: agent not running: no socket at {} (start it with `detour agent ...`, or pass --socket)",
            missing.display()
        )
    );
    // A socket file nobody listens on, as a killed agent leaves it.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert_eq!(
        failure(&detour_at(&stale, &["routes"]), 3),
        format!(
            "detour: agent not running: {} is a stale socket with no agent behind it (start it with `detour agent ...`)",
            stale.display()
        )
    );
    let file = dir.join("routes.yaml");
    std::fs::write(&file, "").expect("write");
    for path in [&file, &dir] {
        assert_eq!(
            failure(&detour_at(path, &["flows", "-o", "json"]), 3),
            format!(
                "detour: {} is not a socket: pass the agent's --admin-socket path with --socket",
                path.display()
            )
        );
    }
    let pins = dir.join("no-pins");
    let missing = failure(
        &detour_at(
            &missing,
            &["bpf", "maps", "--pin-dir", &pins.display().to_string()],
        ),
        5,
    );
    assert!(
        missing.starts_with(&format!(
            "detour: no pinned maps under {}: the agent has never run on this node",
            pins.display()
        )),
        "{missing}"
    );
    // version still answers, and says why the agent is unknown.
    let version = json(&detour_at(&stale, &["version", "-o", "json"]));
    assert_eq!(version["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["agent"], Value::Null);
    assert!(
        version["agent_error"]
            .as_str()
            .is_some_and(|e| e.contains("stale socket"))
    );
    // Usage errors are clap's, with exit code 2.
    assert_eq!(
        detour_at(&stale, &["routes", "--bogus"]).status.code(),
        Some(2)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_and_man_pages_come_from_the_definitions() {
    let run = |args: &[&str]| {
        ok(&Command::new(detour_bin())
            .args(args)
            .output()
            .expect("detour"))
    };
    assert!(run(&["completions", "bash"]).contains("complete -F _detour"));
    assert!(run(&["completions", "zsh"]).starts_with("#compdef detour"));
    let fish = run(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c detour") && fish.contains("counters"),
        "{fish}"
    );
    let man = run(&["man"]);
    assert!(
        man.contains(".TH detour 1") && man.contains("explain"),
        "{man}"
    );
    let dir = std::env::temp_dir().join(unique_name("detour-man-"));
    run(&["man", "--out", &dir.display().to_string()]);
    for page in [
        "detour.1",
        "detour-status.1",
        "detour-bpf-counters.1",
        "detour-explain.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie"), "{page}: {text}");
    }
    assert!(
        !dir.join("detour-crdgen.1").exists(),
        "hidden verbs have no page"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
