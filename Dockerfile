# hubify-edge: multi-stage build. The builder compiles the release binary (Pingora's C
# dependencies need cmake); the runtime image is Debian slim with the binary, CA roots and the
# example configurations under /etc/hubify-edge.
#
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t hubify-edge .
#   docker run --rm hubify-edge hubify-edge --config /etc/hubify-edge/fly-forward.toml check
#
# .dockerignore leaves .git out of the context, so the commit hubify_build_info reports comes from
# GIT_COMMIT (without it: "unknown"); on Fly: fly deploy --build-arg GIT_COMMIT=$(git rev-parse HEAD).

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The full 40-hex commit; router/build.rs reads it as HUBIFY_EDGE_GIT_COMMIT.
ARG GIT_COMMIT=
# The copy is stripped of its debug information (the line tables of profile.release); the symbol
# table stays, so a panic's backtrace still names its functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    HUBIFY_EDGE_GIT_COMMIT="$GIT_COMMIT" cargo build --release --locked -p hubify-edge \
 && cp target/release/hubify-edge /usr/local/bin/hubify-edge \
 && strip --strip-debug /usr/local/bin/hubify-edge

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home hubify
COPY --from=builder /usr/local/bin/hubify-edge /usr/local/bin/hubify-edge
COPY examples/*.toml /etc/hubify-edge/
# A placeholder key nobody holds the private half of (every token refused) until fly.toml's
# [[files]] writes the Hubify API's JWKS over it at deploy.
COPY examples/jwks.json /etc/hubify-edge/jwks.json
RUN hubify-edge --config /etc/hubify-edge/fly-forward.toml check \
 && hubify-edge --config /etc/hubify-edge/fly-replay.toml check
USER hubify
WORKDIR /data
EXPOSE 8443 8080 9091
# Docker's own health state: `health` GETs /readyz on the configuration's [ops] address (the
# unspecified address read as loopback) and exits 0 only on 200. Both Fly configurations use
# [::]:9091. Fly does not run it: fly.toml's [checks] does the same from outside.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["hubify-edge", "--config", "/etc/hubify-edge/fly-forward.toml", "health"]
# Fly's [processes] command replaces this CMD (on Fly, its init is PID 1 and forwards signals).
CMD ["hubify-edge", "--config", "/etc/hubify-edge/fly-forward.toml", "run"]
