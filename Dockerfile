# syntax=docker/dockerfile:1
#
# The detour image, for a container engine: the agent (the same binary is
# the node CLI) and the sandbox controller (/usr/local/bin/detour-controller).
#
#   docker build -t detour:0.1.0 \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     --build-arg DETOUR_REVISION=$(git rev-parse HEAD) .
#
# One definition of the image: the build stage runs `cargo xtask image`,
# which CI runs too (deploy/README.md, "The image"), and the last stage is
# that image's layers as they are. The run settings below repeat the
# image's; xtask's tests compare the two (xtask/src/image/dockerfile.rs).
# The build mirrors `cargo xtask setup`: rustup's stable Rust for the host,
# Debian's rustc-web with its prebuilt BPF core and bpf-linker against
# Debian's LLVM 22 for the eBPF programs.

FROM debian:bookworm AS build
ARG RUST_VERSION=1.95
ARG SOURCE_DATE_EPOCH=0
ARG DETOUR_REVISION=unknown
ENV DEBIAN_FRONTEND=noninteractive \
    CARGO_HOME=/usr/local/cargo \
    RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:$PATH \
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} \
    DETOUR_REVISION=${DETOUR_REVISION}
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates curl git \
    && curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}"
WORKDIR /src
COPY . .
# Installs what the build needs (Debian's rustc-web and LLVM, bpf-linker,
# cargo-auditable), builds the release binaries and writes the image.
RUN cargo xtask image \
    && mkdir /rootfs \
    && cd /rootfs \
    && tar -xf /src/target/image/detour-*.oci.tar -C /tmp \
    && for layer in $(grep -o 'blobs/sha256/[0-9a-f]*' /tmp/manifest.json | tail -n +2); do \
           tar -xpf "/tmp/$layer" -C /rootfs; \
       done

FROM scratch
ARG DETOUR_VERSION=0.1.0
ARG DETOUR_REVISION=unknown
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="detour" \
      org.opencontainers.image.description="detour: per-request traffic steering to sandbox forks (node agent, node CLI and sandbox controller)" \
      org.opencontainers.image.version="${DETOUR_VERSION}" \
      org.opencontainers.image.revision="${DETOUR_REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.detour.sbom="usr/share/detour/sbom.spdx.json"
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 0
ENTRYPOINT ["/usr/local/bin/detour"]
CMD ["agent"]
