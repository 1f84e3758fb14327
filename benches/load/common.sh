# Sourced by the load scripts (run.sh, cpu.sh, instructions.sh, memory.sh): what they all need.
#
#   source "$(dirname "$0")/common.sh" <name>    # <name>: the temp dir's prefix
#
# After it: the working directory is the repository root; Debian's bench packages are installed
# (scripts/deps bench); $BIN is the router (a release build unless BIN was given; NO_BUILD=1 skips
# the build of the default path); $FAST_PATH is `server.http1_fast_path` for the router configs
# (default true); $WORK is a temp dir removed on exit (KEEP=1 keeps it) together with every
# process whose pid was added to PIDS; free_port, wait_port and start_upstream are defined.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/deps bench

FAST_PATH=${FAST_PATH:-true}
if [[ -z ${BIN:-} ]]; then
  [[ -n ${NO_BUILD:-} ]] || cargo build --release --bin hubify-edge >&2
  BIN=target/release/hubify-edge
fi

WORK=$(mktemp -d "/tmp/hubify-${1:-load}.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [SECONDS]: until something accepts on 127.0.0.1:PORT (default 10 s).
wait_port() {
  local tries=$(( ${2:-10} * 20 ))
  for _ in $(seq 1 "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2; return 1
}

# start_upstream PORT: the trivial upstream every scenario forwards to (an nginx `return 200`).
start_upstream() {
  mkdir -p "$WORK/up"
  cat > "$WORK/up/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$1; location / { return 200 "ok\n"; } }
}
NGX
  nginx -c "$WORK/up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
}
