//! `cargo xtask fuzz`: runs the libFuzzer targets in `fuzz/` (cargo-fuzz) for
//! a bounded time each and says which found a crash. Not part of CI: a run
//! costs minutes of both cores and finds nothing new on most days.
//!
//! Toolchain: cargo-fuzz builds with `-Zsanitizer=address`, a nightly flag,
//! and this kind of machine has only rustup's stable toolchain (no nightly
//! can be fetched). Stable ships the same AddressSanitizer runtime
//! (`librustc-stable_rt.asan.a` in its target libdir), so `RUSTC_BOOTSTRAP=1`
//! lets stable take the flag. Should a toolchain lack that runtime, the
//! targets are built with `--sanitizer none`: libFuzzer's coverage
//! instrumentation uses stable `-C` flags only, so fuzzing still works, just
//! without ASan's checks on unsafe code (httparse's SIMD paths).
//!
//! Corpus: the seeds committed in `fuzz/corpus/<target>/` are read, and what
//! libFuzzer adds goes to `fuzz/target/corpus/<target>/` (ignored by git), so
//! a run never dirties the tree and the next run starts where it stopped.
//! Crashing inputs go to `fuzz/artifacts/<target>/` (also ignored).

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, bail};
use clap::{Args, builder::PossibleValuesParser};

use crate::{cargo, exec, root};

/// The fuzz targets, in `fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: [&str; 5] = [
    "http_head",
    "chunked",
    "routing_key",
    "routes_file",
    "kafka_batches",
];

const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds one input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECS: u32 = 10;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  cargo xtask fuzz                     every target, 30 s each
  cargo xtask fuzz chunked --seconds 600
  cargo xtask fuzz http_head -- -max_len=70000

A crashing input is saved under fuzz/artifacts/<target>/; the summary says
how to replay and minimise it.")]
pub struct FuzzArgs {
    /// The target to run; every target when omitted.
    #[arg(value_parser = PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// How long to fuzz each target, in seconds (libFuzzer's 0 would be forever).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub seconds: u64,
    /// Further libFuzzer options (after `--`).
    #[arg(last = true, value_name = "LIBFUZZER_OPTION")]
    pub libfuzzer: Vec<String>,
}

/// How one target's run ended.
struct Outcome {
    target: String,
    status: ExitStatus,
    runs: Option<u64>,
    per_second: Option<u64>,
    /// The input libFuzzer saved: a crash, leak, hang or OOM when the run
    /// failed, else a slow input.
    artifact: Option<String>,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    // The agent's build script builds the eBPF programs: it needs setup's tools.
    crate::setup::run()?;
    install_cargo_fuzz()?;
    let sanitizer = sanitizer()?;
    if sanitizer == "none" {
        eprintln!("fuzz: no AddressSanitizer runtime in this toolchain; fuzzing without it");
    }
    let targets: Vec<&str> = match &args.target {
        Some(target) => vec![target],
        None => TARGETS.to_vec(),
    };

    let mut build = cargo_fuzz("build", sanitizer);
    if let [target] = targets[..] {
        build.arg(target);
    }
    exec(&mut build).context("building the fuzz targets")?;

    let mut outcomes = Vec::new();
    for target in targets {
        eprintln!("fuzz: {target} for {} s", args.seconds);
        outcomes.push(fuzz(target, sanitizer, args)?);
    }
    report(&outcomes, sanitizer)
}

/// `cargo fuzz <verb>` on `fuzz/`, with the flags of the module docs.
fn cargo_fuzz(verb: &str, sanitizer: &str) -> Command {
    let mut command = cargo();
    command
        .arg("fuzz")
        .arg(verb)
        .arg("--fuzz-dir")
        .arg(fuzz_dir())
        .args(["--sanitizer", sanitizer])
        .env("RUSTC_BOOTSTRAP", "1");
    command
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Runs one target, passing libFuzzer's output through and reading its
/// final statistics and artifact path from it.
fn fuzz(target: &str, sanitizer: &str, args: &FuzzArgs) -> anyhow::Result<Outcome> {
    let dir = fuzz_dir();
    let corpus = dir.join("target/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let mut command = cargo_fuzz("run", sanitizer);
    command
        .arg(target)
        .arg(&corpus)
        .arg(dir.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1");
    let dict = dir.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        command.arg(format!("-dict={}", dict.display()));
    }
    command.args(&args.libfuzzer).stderr(Stdio::piped());

    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let mut outcome = Outcome {
        target: target.to_owned(),
        status: ExitStatus::default(),
        runs: None,
        per_second: None,
        artifact: None,
    };
    if let Some(stderr) = child.stderr.take() {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        let mut out = std::io::stderr();
        // libFuzzer may print raw input bytes: lines are not always UTF-8.
        while reader.read_until(b'\n', &mut line)? > 0 {
            out.write_all(&line)?;
            outcome.read(&String::from_utf8_lossy(&line));
            line.clear();
        }
    }
    outcome.status = child.wait()?;
    Ok(outcome)
}

impl Outcome {
    /// Takes what it needs from one line of libFuzzer's output.
    fn read(&mut self, line: &str) {
        let stat = |name: &str| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse::<u64>().ok())
        };
        if let Some(runs) = stat("stat::number_of_executed_units:") {
            self.runs = Some(runs);
        } else if let Some(per_second) = stat("stat::average_exec_per_sec:") {
            self.per_second = Some(per_second);
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_owned());
        }
    }

    fn failed(&self) -> bool {
        !self.status.success()
    }

    fn verdict(&self) -> String {
        match (&self.artifact, self.failed()) {
            (Some(artifact), true) => format!("CRASH {artifact}"),
            (None, true) => format!("failed ({})", self.status),
            (Some(artifact), false) => format!("no crash (slow input {artifact})"),
            (None, false) => "no crash".to_owned(),
        }
    }
}

/// Prints one line per target; fails if any target crashed or failed.
fn report(outcomes: &[Outcome], sanitizer: &str) -> anyhow::Result<()> {
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    eprintln!();
    eprintln!(
        "{:<12} {:>12} {:>9}  result",
        "target", "executions", "exec/s"
    );
    for outcome in outcomes {
        eprintln!(
            "{:<12} {:>12} {:>9}  {}",
            outcome.target,
            count(outcome.runs),
            count(outcome.per_second),
            outcome.verdict()
        );
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|outcome| outcome.failed()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for (target, artifact) in failed
        .iter()
        .filter_map(|outcome| Some((&outcome.target, outcome.artifact.as_ref()?)))
    {
        let command = |verb: &str| {
            format!(
                "RUSTC_BOOTSTRAP=1 cargo fuzz {verb} --fuzz-dir fuzz -s {sanitizer} {target} {artifact}"
            )
        };
        eprintln!();
        eprintln!("{target}: replay with\n  {}", command("run"));
        eprintln!("minimise with\n  {}", command("tmin"));
    }
    let names: Vec<&str> = failed.iter().map(|outcome| &*outcome.target).collect();
    bail!("fuzzing failed: {}", names.join(", "))
}

/// Installs cargo-fuzz unless this version is already there.
fn install_cargo_fuzz() -> anyhow::Result<()> {
    let installed = cargo()
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .is_some_and(|output| String::from_utf8_lossy(&output.stdout).contains(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (1-2 minutes)");
    exec(cargo().args([
        "install",
        "--locked",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ]))
}

/// `address` when the toolchain has the ASan runtime, else `none` (see the
/// module docs).
fn sanitizer() -> anyhow::Result<&'static str> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir"])
        .current_dir(root())
        .output()
        .context("cannot run rustc --print target-libdir")?;
    if !output.status.success() {
        bail!("rustc --print target-libdir failed ({})", output.status);
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_asan = std::fs::read_dir(&libdir)
        .with_context(|| format!("cannot list {}", libdir.display()))?
        .filter_map(Result::ok)
        .any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("librustc-") && name.ends_with("_rt.asan.a")
        });
    Ok(if has_asan { "address" } else { "none" })
}
