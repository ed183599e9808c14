# syntax=docker/dockerfile:1
#
# The Concord node image: `docker build -t concord:dev .`
# Three nodes on one machine: compose.yaml (docs/OPERATIONS.md,
# "Three nodes with Docker Compose").

FROM rust:1-slim-bookworm AS builder
# Nothing to install: the slim Rust image has gcc and libc6-dev, all that the C
# parts of the build need (SQLite bundled by rusqlite, mimalloc, ring).
WORKDIR /src
# Only what the workspace build reads (crates/ holds every member).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The registry and the target directory live in BuildKit caches, kept between
# builds, so the binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p concord \
    && install -D -m 0755 target/release/concord /out/concord

FROM debian:bookworm-slim
# ca-certificates for TLS roots; curl for the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 concord \
    && useradd --system --uid 10001 --gid concord --home-dir /var/lib/concord \
        --no-create-home --shell /usr/sbin/nologin concord \
    && install -d -o concord -g concord -m 0750 /var/lib/concord
COPY --from=builder /out/concord /usr/local/bin/concord
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/concord-entrypoint
# Every `concord` command (also through `docker exec`) defaults to this node
# directory; logs go to `docker logs` without colour codes.
ENV CONCORD_DIR=/var/lib/concord \
    NO_COLOR=1
USER concord
WORKDIR /var/lib/concord
VOLUME /var/lib/concord
# 7300: HTTP API; 7301: MPC connections from peers.
EXPOSE 7300 7301
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD port="${CONCORD_API_LISTEN:-0.0.0.0:7300}"; curl -fsS -o /dev/null "http://127.0.0.1:${port##*:}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/concord-entrypoint"]
