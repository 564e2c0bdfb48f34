//! `detour agent` flags that are checked before anything starts.

use clap::Parser;
use detour_common::capacity;

use crate::{cli::agent::AgentArgs, datapath::Capacities};

#[derive(Debug, Parser)]
struct Agent {
    #[command(flatten)]
    args: AgentArgs,
}

fn parse(extra: &[&str]) -> Result<AgentArgs, clap::Error> {
    let base = [
        "agent",
        "--cgroup",
        "/sys/fs/cgroup/x",
        "--routes",
        "r.yaml",
    ];
    Agent::try_parse_from(base.iter().chain(extra)).map(|agent| agent.args)
}

#[test]
fn capacities_default_to_the_object_sizes() {
    let args = parse(&[]).expect("parses");
    assert_eq!(args.capacities(), Capacities::default());
    assert_eq!(
        Capacities::default(),
        Capacities {
            steered: capacity::STEERED,
            orig_by_cookie: capacity::ORIG_BY_COOKIE,
            orig_by_peer: capacity::ORIG_BY_PEER,
        }
    );
}

#[test]
fn orig_dst_capacity_sizes_both_record_maps() {
    let args = parse(&["--steered-capacity", "2", "--orig-dst-capacity", "4"]).expect("parses");
    assert_eq!(
        args.capacities(),
        Capacities {
            steered: 2,
            orig_by_cookie: 4,
            orig_by_peer: 4,
        }
    );
    assert_eq!(
        args.capacities().to_string(),
        "STEERED 2, ORIG_BY_COOKIE 4, ORIG_BY_PEER 4"
    );
}

#[test]
fn a_capacity_of_zero_is_refused_naming_the_flag() {
    for flag in ["--steered-capacity", "--orig-dst-capacity"] {
        let error = parse(&[flag, "0"]).expect_err("0 refused").to_string();
        assert!(
            error.contains(flag) && error.contains("0 is not in 1.."),
            "{error}"
        );
    }
    let error = parse(&["--steered-capacity", "many"])
        .expect_err("not a number")
        .to_string();
    assert!(error.contains("--steered-capacity"), "{error}");
}
