# hubify-edge: multi-stage build. The builder compiles the release binary (Pingora's C
# dependencies need cmake); the runtime image is Debian slim with the binary, CA roots and the
# example configurations under /etc/hubify-edge.
#
#   docker build -t hubify-edge .
#   docker run --rm hubify-edge hubify-edge --config /etc/hubify-edge/fly-forward.toml check

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hubify-edge \
 && cp target/release/hubify-edge /usr/local/bin/hubify-edge

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
# Fly's [processes] command replaces this CMD (on Fly, its init is PID 1 and forwards signals).
CMD ["hubify-edge", "--config", "/etc/hubify-edge/fly-forward.toml", "run"]
