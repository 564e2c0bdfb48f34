//! `cargo xtask test`: setup, build, then the whole suite: unit tests, the
//! routes-file and map-layout tests, and the root-only namespace tests in
//! `tests/` against the freshly built binary.

use clap::Args;

use detour_tests::node;

use crate::{cargo, exec, is_root};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let k8s_tools = crate::setup::all()?;
    let binary = crate::build::run_build(true)?;
    if !is_root() && std::env::var_os(detour_tests::SKIP_ROOT_ENV).is_none() {
        eprintln!(
            "note: not root, so the namespace tests will fail; run `sudo -E cargo xtask test`, \
             or set {}=1 to skip them explicitly",
            detour_tests::SKIP_ROOT_ENV
        );
    }
    let mut command = cargo();
    command
        .args(["test", "--locked", "--workspace"])
        .args(&args.cargo_args)
        .env("DETOUR_BIN", &binary)
        .env(crate::k8s_tools::TOOLS_ENV, &k8s_tools)
        .env(crate::kafka::KAFKA_ENV, crate::kafka::ensure()?);
    // The real node runs the image as users install it: the release build,
    // packaged (a few minutes more than the debug build alone).
    if std::env::var_os(node::SKIP_ENV).is_some() {
        eprintln!(
            "note: {} is set: the real-node tests are skipped",
            node::SKIP_ENV
        );
    } else {
        command.env(node::IMAGES_ENV, crate::image::test_images::build()?);
    }
    exec(&mut command)
}
