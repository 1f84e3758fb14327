#!/usr/bin/env bash
# Instructions the router executes per request, counted by valgrind's callgrind — a figure that
# does not move with the load other processes put on this shared machine (wall-clock throughput
# does), so it is the one to compare before/after a change to the request path.
#
# Question answered: how many instructions (whole process: Pingora, tokio, rustls, our phases,
# the allocator, the kernel boundary excluded) does one forwarded request cost?
#
#   benches/load/instructions.sh              # plain-HTTP keep-alive forward, 20 000 requests
#   N=50000 benches/load/instructions.sh plain tls-h1 replay
#   KEEP=1 benches/load/instructions.sh plain # keep the callgrind.out files for callgrind_annotate
#
# The router runs under callgrind with one worker; h2load sends a warm-up of 2000 requests, the
# counters are zeroed, then N requests on 8 keep-alive connections (HTTP/1.1, Host rotated is not
# possible with h2load: one workspace, a cache hit every time), and the counters are dumped.
# Only loopback addresses; every step is bounded.
source "$(dirname "$0")/common.sh" instr
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 1; }

N=${N:-20000}
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(plain tls-h1 replay)

UP=$(free_port); R_HTTP=$(free_port); R_TLS=$(free_port); R_REPLAY=$(free_port)
bench_cert

start_upstream "$UP"

router_server 1 > "$WORK/forward.toml"
cat >> "$WORK/forward.toml" <<TOML
[listeners.https]
address = "127.0.0.1:$R_TLS"
[listeners.http]
address = "127.0.0.1:$R_HTTP"
dispatch = "forward"
[tls]
source = "files"
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[log]
level = "warn"
access = ${ACCESS:-false}
[[paths]]
prefix = "/"
port = $UP
TOML
static_routes $(seq 0 999) >> "$WORK/forward.toml"
router_server 1 > "$WORK/replay.toml"
cat >> "$WORK/replay.toml" <<TOML
[listeners.http]
address = "127.0.0.1:$R_REPLAY"
dispatch = "replay"
[replay]
timeout = "5s"
fallback = "force_self"
[log]
level = "warn"
access = ${ACCESS:-false}
[[paths]]
prefix = "/"
port = $UP
TOML
static_routes $(seq 0 999) >> "$WORK/replay.toml"
wait_port "$UP"

# measure NAME CONFIG URL [h2load options...] → "NAME Ir/request"
measure() {
  local name=$1 config=$2 url=$3 port
  shift 3
  port=$(sed -E 's#^[a-z]+://127.0.0.1:([0-9]+)/.*#\1#' <<<"$url")
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$name.%p" \
    "$BIN" run --config "$config" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=($pid)
  wait_port "$port" 60   # valgrind starts slowly
  h2load "$@" -n2000 -c8 -H ':authority: w7.bench.test' "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  local out
  out=$(h2load "$@" -n"$N" -c8 -H ':authority: w7.bench.test' "$url")
  grep -q "$N succeeded, 0 failed" <<<"$out" || { echo "$name: h2load had failures:" >&2; grep requests: <<<"$out" >&2; }
  grep -q "status codes: $N 2xx\|status codes: 0 2xx, $N 3xx" <<<"$out" \
    || { echo "$name: unexpected statuses:" >&2; grep "status codes" <<<"$out" >&2; }
  callgrind_control -d "$pid" >/dev/null
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  # The dump made by `-d` is the one with a `.1` part suffix; sum its totals over every thread.
  local ir
  ir=$(cat "$WORK"/callgrind."$name"."$pid".1* 2>/dev/null | awk '/^totals:/ { s += $2 } END { print s+0 }')
  printf '%-8s %12.0f Ir/request  (%d requests)\n' "$name" "$(awk -v a="$ir" -v n="$N" 'BEGIN { print a/n }')" "$N"
}

for s in "${SCENARIOS[@]}"; do
  case $s in
    plain)  measure plain "$WORK/forward.toml" "http://127.0.0.1:$R_HTTP/" --h1 ;;
    tls-h1) measure tls-h1 "$WORK/forward.toml" "https://127.0.0.1:$R_TLS/" --h1 ;;
    tls-h2) measure tls-h2 "$WORK/forward.toml" "https://127.0.0.1:$R_TLS/" -m10 ;;
    replay) measure replay "$WORK/replay.toml" "http://127.0.0.1:$R_REPLAY/" --h1 ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
[[ -z ${KEEP:-} ]] || echo "callgrind files kept in $WORK"
