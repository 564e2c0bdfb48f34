//! `cargo xtask bench`: benchmarks that print ratios against peers measured
//! in the same run.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Suite {
    /// connect()+close() cost: no agent, attached-not-steered, steered, iptables REDIRECT.
    Connect,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Suite::Connect)]
    pub suite: Suite,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match args.suite {
        Suite::Connect => anyhow::bail!("the connect benchmark is not implemented yet"),
    }
}
