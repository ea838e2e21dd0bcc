# syntax=docker/dockerfile:1
# The three LOGOS services in one image: sophia, hermes and apollo, built in release mode, run as
# a non-root user on a slim Debian. Pick the binary with the command, e.g.
#   docker run --rm -p 127.0.0.1:47000:47000 logos:0.1.0 sophia --host 0.0.0.0
# docker-compose.otel.yml (profile "services") and deploy/k8s run it this way.

FROM rust:1.95.0-trixie AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between builds, so a source change rebuilds only
# the workspace's crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sophia -p hermes -p apollo \
    && install -D -t /out target/release/sophia target/release/hermes target/release/apollo

FROM debian:trixie-slim AS runtime
# curl for the health check; CA certificates for HTTPS to an LLM provider or a TLS collector.
# Versions come with the pinned Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin logos
COPY --from=build /out/ /usr/local/bin/
# The environments' profiles: LOGOS_ENV (or --env) picks one; unset, `dev` sets nothing.
COPY logos.toml /etc/logos/logos.toml
ENV LOGOS_CONFIG=/etc/logos/logos.toml
USER 10001:10001
# Every service answers GET /health; HEALTH_URL names the one this container runs (sophia's port
# by default; compose and Kubernetes check each service on its own port).
ENV HEALTH_URL=http://127.0.0.1:47000/health
EXPOSE 47000 17000 27000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["sh", "-c", "curl -fsS -o /dev/null \"$HEALTH_URL\""]
CMD ["sophia", "--host", "0.0.0.0"]
