//! Builds the eBPF programs (`ebpf/detour-ebpf`) for `bpfel-unknown-none` and
//! leaves the objects (the node's, and the per-sandbox fork object) in
//! `OUT_DIR`, where `src/datapath` embeds them.
//!
//! The programs need a compiler with a prebuilt `core` for the BPF target and
//! bpf-linker (see ARCHITECTURE.md, "Toolchain"); `cargo xtask setup` installs
//! both. `aya-build` is not used because it requires rustup's `-Z build-std`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const TARGET: &str = "bpfel-unknown-none";

/// Links the agent with its relative relocations packed (`DT_RELR`, glibc
/// 2.36 and later: Debian 12 and the distroless cc-debian12 image). The
/// loader then reads a few KiB of relocations at start instead of ~480 KiB,
/// pages that would otherwise stay in the idle agent's RSS.
fn pack_relative_relocations() {
    let target = |key: &str| env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
const DEFAULT_BPF_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    pack_relative_relocations();
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest_dir.join("../ebpf/detour-ebpf");
    let common_dir = manifest_dir.join("../ebpf/detour-common");
    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=DETOUR_BPF_RUSTC");
    println!("cargo:rerun-if-env-changed=DETOUR_BPF_LINKER");

    let rustc = env::var("DETOUR_BPF_RUSTC").unwrap_or_else(|_| DEFAULT_BPF_RUSTC.to_owned());
    if !Path::new(&rustc).exists() {
        fail(&format!(
            "no compiler for the eBPF target at {rustc}: run `cargo xtask setup` (installs Debian's rustc-web)"
        ));
    }
    let linker = bpf_linker().unwrap_or_else(|| {
        fail("bpf-linker not found in PATH or ~/.cargo/bin: run `cargo xtask setup`")
    });
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut build = Command::new(cargo);
    build
        .current_dir(&ebpf_dir)
        .args(["build", "--release", "--locked", "--target", TARGET]);
    // Settings of the outer (host) build must not leak into the BPF build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTC",
        "CARGO_MAKEFLAGS",
        "CARGO_LLVM_COV",
    ] {
        build.env_remove(var);
    }
    build
        .env("RUSTC", &rustc)
        // aya-ebpf relies on unstable features (asm_experimental_arch).
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
            "--cfg bpf_target_arch=\"x86_64\" -C debuginfo=2 -C link-arg=--btf",
        );
    let status = build
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run cargo for the eBPF build: {e}")));
    if !status.success() {
        fail(&format!(
            "the eBPF build failed ({status}); see the output above"
        ));
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for (bin, object_name) in [("detour", "detour.bpf.o"), ("detour-fork", "fork.bpf.o")] {
        let object = ebpf_dir
            .join("target")
            .join(TARGET)
            .join("release")
            .join(bin);
        std::fs::copy(&object, out_dir.join(object_name))
            .unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", object.display())));
    }
}

fn bpf_linker() -> Option<PathBuf> {
    if let Some(path) = env::var_os("DETOUR_BPF_LINKER") {
        return Some(path.into());
    }
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|dir| dir.join("bpf-linker"))
        .find(|path| path.is_file())
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
