# syntax=docker/dockerfile:1
#
# The detour image: the agent (the same binary is the node CLI) and the
# sandbox controller (`/usr/local/bin/detour-controller`).
#
#   docker build -t detour:0.1.0 .
#
# The build mirrors `cargo xtask setup` (see ARCHITECTURE.md, "Toolchain"):
# rustup's stable Rust for the agent, and for the eBPF programs Debian's
# rustc-web with its prebuilt core for bpfel-unknown-none plus bpf-linker
# built against Debian's LLVM 22. The development machines have no container
# engine, so this file is not built by CI: keep it simple.

FROM debian:bookworm AS build
ARG RUST_VERSION=1.95
ARG BPF_LINKER_VERSION=0.13.0
ENV DEBIAN_FRONTEND=noninteractive \
    CARGO_HOME=/usr/local/cargo \
    RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential ca-certificates curl \
        rustc-web libstd-rust-web-dev-bpf llvm-22-dev \
    && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}" \
    && LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked "bpf-linker@${BPF_LINKER_VERSION}" \
        --no-default-features --features llvm-22
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p detour -p detour-controller \
    && install -m 0755 target/release/detour target/release/detour-controller /usr/local/bin/

# glibc and libgcc, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /usr/local/bin/detour /usr/local/bin/detour-controller /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/detour"]
CMD ["agent"]
