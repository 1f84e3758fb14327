# Sourced by the load scripts (run.sh, cpu.sh, instructions.sh, memory.sh): what they all need.
#
#   source "$(dirname "$0")/common.sh" <name>    # <name>: the temp dir's prefix
#
# After it: the working directory is the repository root; Debian's bench packages are installed
# (scripts/deps bench); $BIN is the router (a release build unless BIN was given; NO_BUILD=1 skips
# the build of the default path); $FAST_PATH is `server.fast_path` for the router configs
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

# bench_cert: a wildcard certificate for *.bench.test in $WORK/{cert,key}.pem.
bench_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:*.bench.test,DNS:bench.test" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
}

# router_server WORKERS: the top of a router config: the domain and [server].
router_server() {
  printf 'domain = "bench.test"\n[server]\nthreads = %s\nfast_path = %s\ngrace_period = "0s"\nshutdown_timeout = "1s"\n' \
    "$1" "$FAST_PATH"
}

# router_listeners HTTP_PORT TLS_PORT: the router's TLS listener, its forwarding plain listener and
# the bench certificate (needs bench_cert), in that order.
router_listeners() {
  printf '[listeners.https]\naddress = "127.0.0.1:%s"\n[listeners.http]\naddress = "127.0.0.1:%s"\ndispatch = "forward"\n[tls]\nsource = "files"\ncert = "%s"\nkey = "%s"\n' \
    "$2" "$1" "$WORK/cert.pem" "$WORK/key.pem"
}

# static_routes N...: a [[routes.static]] record for each workspace wN (address 127.0.0.1).
static_routes() {
  for i in "$@"; do
    printf '[[routes.static]]\nlabel = "w%d"\naddress = "127.0.0.1"\napp = "hubify-w%d"\nmachine_id = "mw%d"\n' "$i" "$i" "$i"
  done
}

# nginx_router UP HTTP_PORT REPLAY_PORT TLS_PORT N...: nginx doing the router's job, in
# $WORK/ngx/nginx.conf — workspaces wN.bench.test (a Host map) forwarded to 127.0.0.1:UP on
# HTTP_PORT (and TLS_PORT with HTTP/2 when not empty; needs bench_cert), `fly-replay` 307s on
# REPLAY_PORT, 404 for other hosts. The worker count is given on nginx's command line.
nginx_router() {
  local up=$1 http=$2 replay=$3 tls=$4
  shift 4
  mkdir -p "$WORK/ngx"
  {
    echo "pid $WORK/ngx/nginx.pid;"
    echo "error_log $WORK/ngx/error.log warn;"
    echo "events { worker_connections 16384; }"
    echo "http {"
    echo "  access_log off; keepalive_requests 1000000;"
    echo "  upstream workspace { server 127.0.0.1:$up; keepalive 128; }"
    echo "  map_hash_bucket_size 128;"
    echo "  map \$host \$ws {"
    echo "    default \"\";"
    for i in "$@"; do echo "    w$i.bench.test w$i;"; done
    echo "  }"
    cat <<NGX
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Forwarded-Host \$host;
  proxy_set_header X-Request-Id \$request_id;
  server {
    listen 127.0.0.1:$http;
NGX
    if [[ -n $tls ]]; then
      echo "    listen 127.0.0.1:$tls ssl http2;"
      echo "    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;"
      # The router speaks TLS 1.2 and 1.3; nginx 1.22's default is TLS 1.0–1.2, so without this
      # a new connection to nginx is a TLS 1.2 abbreviated resumption (no key exchange at all)
      # while one to the router is a TLS 1.3 resumption (an X25519 exchange on both sides).
      # TLS 1.3 has been nginx's default since 1.23.4.
      echo "    ssl_protocols TLSv1.2 TLSv1.3;"
    fi
    cat <<NGX
    location / {
      if (\$ws = "") { return 404; }
      add_header X-Request-Id \$request_id;
      proxy_pass http://workspace;
    }
  }
  server {
    listen 127.0.0.1:$replay;
    location / {
      if (\$ws = "") { return 404; }
      add_header fly-replay "app=hubify-\$ws;instance=m\$ws;timeout=5s;fallback=force_self" always;
      add_header X-Request-Id \$request_id always;
      return 307;
    }
  }
}
NGX
  } > "$WORK/ngx/nginx.conf"
}
