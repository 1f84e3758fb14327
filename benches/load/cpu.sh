#!/usr/bin/env bash
# CPU time per request (user + system, all threads, from /proc/PID/stat) of the router and of
# nginx doing the same job — a per-request cost that other processes on this shared machine move
# much less than they move requests/s.
#
# Question answered: how many microseconds of CPU does one request cost the router, next to
# nginx, kernel work (sockets) included?
#
#   benches/load/cpu.sh                      # plain and replay, 100 000 requests each
#   N=200000 benches/load/cpu.sh plain
#   benches/load/cpu.sh tls-h1 tls-h2 tls-new # the TLS listener
#   BIN=/tmp/hubify-edge-before benches/load/cpu.sh
#   FAST_PATH=false benches/load/cpu.sh     # HTTP/1.1 through Pingora's engine only
#
# h2load sends N requests on 64 keep-alive HTTP/1.1 connections after a warm-up (tls-h1 the same
# over TLS; tls-h2: HTTP/2 over TLS, 64 connections × 10 streams); the CPU clock ticks (10 ms) of
# the proxy process are read before and after. tls-new opens a TLS connection per request (wrk
# with `Connection: close` for DURATION seconds, 64 connections; wrk's OpenSSL resumes sessions,
# as browsers do), and divides by the requests wrk completed. nginx runs one worker without a
# master process (so one process holds all its work). Only loopback addresses.
source "$(dirname "$0")/common.sh" cpu

N=${N:-100000}
DURATION=${DURATION:-10}
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(plain replay)

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

UP=$(free_port); R_HTTP=$(free_port); R_REPLAY=$(free_port); N_HTTP=$(free_port); N_REPLAY=$(free_port)
R_TLS=$(free_port); N_TLS=$(free_port)
start_upstream "$UP"
bench_cert

nginx_router "$UP" "$N_HTTP" "$N_REPLAY" "$N_TLS" 7
nginx -c "$WORK/ngx/nginx.conf" -g 'daemon off; master_process off; worker_processes 1;' & PIDS+=($!)
NGINX_PID=$!

{
  router_server 1
  router_listeners "$R_HTTP" "$R_TLS"
  cat <<TOML
[log]
level = "warn"
access = false
[[paths]]
prefix = "/"
port = $UP
TOML
  static_routes 7
} > "$WORK/forward.toml"
sed -e "s/^address = \"127.0.0.1:$R_HTTP\"/address = \"127.0.0.1:$R_REPLAY\"/" -e 's/^dispatch = "forward"/dispatch = "replay"/' \
  -e '/^\[listeners.https\]/,+1d' -e '/^\[tls\]/,/^key = /d' "$WORK/forward.toml" > "$WORK/replay.toml"
printf '[replay]\ntimeout = "5s"\nfallback = "force_self"\n' >> "$WORK/replay.toml"
$BIN run --config "$WORK/forward.toml" > "$WORK/forward.log" 2>&1 & PIDS+=($!)
FWD_PID=$!
$BIN run --config "$WORK/replay.toml" > "$WORK/replay.log" 2>&1 & PIDS+=($!)
REPLAY_PID=$!
for p in $UP $N_HTTP $N_REPLAY $N_TLS $R_HTTP $R_REPLAY $R_TLS; do wait_port "$p"; done

printf 'wrk.headers["Host"] = "w7.bench.test"\nwrk.headers["Connection"] = "close"\n' > "$WORK/close.lua"

# cost PID URL [h2load options…] → "µs of CPU per request"
cost() {
  local pid=$1 url=$2 out before after
  shift 2
  h2load "$@" -n5000 -c64 -H ':authority: w7.bench.test' "$url" >/dev/null
  before=$(ticks "$pid")
  out=$(h2load "$@" -n"$N" -c64 -H ':authority: w7.bench.test' "$url")
  after=$(ticks "$pid")
  grep -q "$N succeeded, 0 failed" <<<"$out" || { echo "h2load failures on $url:" >&2; grep "requests:" <<<"$out" >&2; }
  per_request $((after - before)) "$N"
}

# cost_new PID URL → "µs of CPU per request", a new TLS connection for each
cost_new() {
  local out before after n
  before=$(ticks "$1")
  out=$(wrk -t1 -c64 -d"${DURATION}s" -s "$WORK/close.lua" "$2")
  after=$(ticks "$1")
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  grep -q "Non-2xx\|Socket errors" <<<"$out" && { echo "wrk errors on $2:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; }
  per_request $((after - before)) "$n"
}

per_request() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }

printf '\n%-8s | %14s | %14s | %s\n' scenario "router µs/req" "nginx µs/req" "router/nginx"
for s in "${SCENARIOS[@]}"; do
  case $s in
    plain) r=$(cost "$FWD_PID" "http://127.0.0.1:$R_HTTP/" --h1); n=$(cost "$NGINX_PID" "http://127.0.0.1:$N_HTTP/" --h1) ;;
    replay) r=$(cost "$REPLAY_PID" "http://127.0.0.1:$R_REPLAY/" --h1); n=$(cost "$NGINX_PID" "http://127.0.0.1:$N_REPLAY/" --h1) ;;
    tls-h1) r=$(cost "$FWD_PID" "https://127.0.0.1:$R_TLS/" --h1); n=$(cost "$NGINX_PID" "https://127.0.0.1:$N_TLS/" --h1) ;;
    tls-h2) r=$(cost "$FWD_PID" "https://127.0.0.1:$R_TLS/" -m10); n=$(cost "$NGINX_PID" "https://127.0.0.1:$N_TLS/" -m10) ;;
    tls-new) r=$(cost_new "$FWD_PID" "https://127.0.0.1:$R_TLS/"); n=$(cost_new "$NGINX_PID" "https://127.0.0.1:$N_TLS/") ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  printf '%-8s | %14s | %14s | %s\n' "$s" "$r" "$n" "$(awk -v a="$r" -v b="$n" 'BEGIN { printf "%.2f", a/b }')"
done
echo "($N requests, h2load -c64 (--h1, or -m10 for tls-h2); tls-new: wrk -c64 for ${DURATION}s; one worker each; CPU = utime + stime of the proxy process)"
