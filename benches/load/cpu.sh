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
#   BIN=/tmp/hubify-edge-before benches/load/cpu.sh
#   FAST_PATH=false benches/load/cpu.sh     # HTTP/1.1 through Pingora's engine only
#
# h2load sends N requests on 64 keep-alive HTTP/1.1 connections after a warm-up; the CPU clock
# ticks (10 ms) of the proxy process are read before and after. nginx runs one worker without a
# master process (so one process holds all its work). Only loopback addresses.
source "$(dirname "$0")/common.sh" cpu

N=${N:-100000}
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(plain replay)

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

UP=$(free_port); R_HTTP=$(free_port); R_REPLAY=$(free_port); N_HTTP=$(free_port); N_REPLAY=$(free_port)
start_upstream "$UP"

nginx_router "$UP" "$N_HTTP" "$N_REPLAY" "" 7
nginx -c "$WORK/ngx/nginx.conf" -g 'daemon off; master_process off; worker_processes 1;' & PIDS+=($!)
NGINX_PID=$!

{
  router_server 1
  cat <<TOML
[listeners.http]
address = "127.0.0.1:$R_HTTP"
dispatch = "forward"
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
  "$WORK/forward.toml" > "$WORK/replay.toml"
printf '[replay]\ntimeout = "5s"\nfallback = "force_self"\n' >> "$WORK/replay.toml"
$BIN run --config "$WORK/forward.toml" > "$WORK/forward.log" 2>&1 & PIDS+=($!)
FWD_PID=$!
$BIN run --config "$WORK/replay.toml" > "$WORK/replay.log" 2>&1 & PIDS+=($!)
REPLAY_PID=$!
for p in $UP $N_HTTP $N_REPLAY $R_HTTP $R_REPLAY; do wait_port "$p"; done

# cost PID PORT → "µs of CPU per request"
cost() {
  local out before after
  h2load --h1 -n5000 -c64 -H ':authority: w7.bench.test' "http://127.0.0.1:$2/" >/dev/null
  before=$(ticks "$1")
  out=$(h2load --h1 -n"$N" -c64 -H ':authority: w7.bench.test' "http://127.0.0.1:$2/")
  after=$(ticks "$1")
  grep -q "$N succeeded, 0 failed" <<<"$out" || { echo "h2load failures on port $2:" >&2; grep "requests:" <<<"$out" >&2; }
  awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$N" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'
}

printf '\n%-8s | %14s | %14s | %s\n' scenario "router µs/req" "nginx µs/req" "router/nginx"
for s in "${SCENARIOS[@]}"; do
  case $s in
    plain) r=$(cost "$FWD_PID" "$R_HTTP"); n=$(cost "$NGINX_PID" "$N_HTTP") ;;
    replay) r=$(cost "$REPLAY_PID" "$R_REPLAY"); n=$(cost "$NGINX_PID" "$N_REPLAY") ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  printf '%-8s | %14s | %14s | %s\n' "$s" "$r" "$n" "$(awk -v a="$r" -v b="$n" 'BEGIN { printf "%.2f", a/b }')"
done
echo "($N requests, h2load --h1 -c64, one worker each, CPU = utime + stime of the proxy process)"
