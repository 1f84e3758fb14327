#!/usr/bin/env bash
# Resident memory of the router holding 100 000 cached routes and 10 000 idle keep-alive client
# connections (target: under 150 MiB).
#
# Question answered: how much memory does one router process need at a realistic tenant count
# and connection count, and which part is the routes, which the connections?
#
#   benches/load/memory.sh
#   ROUTES=100000 CONNS=10000 benches/load/memory.sh
#   LISTENER=https benches/load/memory.sh      # the idle connections are TLS connections
#   SCENARIO=websockets benches/load/memory.sh # open WebSockets and their throughput, router
#                                              # beside nginx (see websockets() below)
#
# What it does, all on loopback: starts a redis-server (no persistence) and writes ROUTES route
# records into it (the contract of docs/routes.md: hash `hubify:route:<label>`), starts the
# router with the Redis route store (cache capacity = ROUTES, 1 h TTL) and one worker thread,
# requests every workspace once (wrk, rotating Host; each request a cache miss filled from
# Redis), then opens CONNS client connections that each make one keep-alive request and stay
# open, idle. The router's VmRSS is printed after start, after the warm-up and with the
# connections open; the route cache's own gauge confirms how many routes are cached. The idle
# connections are measured well inside the 60 s keep-alive timeout.
source "$(dirname "$0")/common.sh" mem

ROUTES=${ROUTES:-100000}
CONNS=${CONNS:-10000}
# LISTENER=https: the idle connections are TLS (HTTP/1.1) connections to the TLS listener.
LISTENER=${LISTENER:-http}

# The router and the client each hold CONNS sockets.
need=$((CONNS + 1024))
if (($(ulimit -n) < need)); then
  ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if (($(ulimit -n) < need)); then
  echo "memory.sh: ulimit -n is $(ulimit -n), need $need for $CONNS connections (raise the hard limit)" >&2
  exit 1
fi

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2/1024 }' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# SCENARIO=websockets: WS (default 1000) WebSockets held open through the router and through
# nginx (one worker each, both proxying to the same upstream, benches/load/ws.py), one message
# each way on each socket, then idle; prints each proxy's RSS growth per socket; the same for
# WS idle keep-alive connections after one plain GET each (fresh processes for each). Then the
# throughput of one WebSocket stream (upstream to client, FLOOD bytes, default 2 GiB, best of
# 3) through each. LISTENER=https: the clients speak TLS to both proxies.
websockets() {
  local n=${WS:-1000} flood=${FLOOD:-2147483648}
  local up
  up=$(free_port)
  bench_cert
  python3 benches/load/ws.py serve "$up" > "$WORK/ws-up.log" 2>&1 & PIDS+=($!)
  wait_port "$up"
  local tls=()
  [[ $LISTENER == https ]] && tls=(https)
  local router='' master='' worker='' rport nport

  # proxies: a fresh router and a fresh nginx (the previous ones stopped), so that memory one
  # measurement freed is not reused by the next; sets router, worker, rport, nport.
  proxies() {
    [[ -n $router ]] && kill "$router" "$master" 2>/dev/null && wait "$router" "$master" 2>/dev/null
    local r_http r_tls ngx_http ngx_tls
    r_http=$(free_port); r_tls=$(free_port); ngx_http=$(free_port); ngx_tls=$(free_port)
    { router_server 1; router_listeners "$r_http" "$r_tls"; static_routes $(seq 0 999); } > "$WORK/router.toml"
    cat >> "$WORK/router.toml" <<TOML
[log]
level = "warn"
access = false
[[paths]]
prefix = "/terminal"
port = $up
idle_timeout = "1h"
[[paths]]
prefix = "/"
port = $up
TOML
    $BIN check --config "$WORK/router.toml" > /dev/null
    $BIN run --config "$WORK/router.toml" > "$WORK/router.log" 2>&1 & PIDS+=($!)
    router=$!
    mkdir -p "$WORK/ngx"
    cat > "$WORK/ngx/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream ws { server 127.0.0.1:$up; }
  server {
    listen 127.0.0.1:$ngx_http;
    listen 127.0.0.1:$ngx_tls ssl;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Host \$host;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
NGX
    nginx -c "$WORK/ngx/nginx.conf" -g 'daemon off;' & PIDS+=($!)
    master=$!
    wait_port "$r_http"; wait_port "$r_tls"; wait_port "$ngx_http"; wait_port "$ngx_tls"
    worker=$(pgrep -P "$master" | head -1)
    rport=$r_http; nport=$ngx_http
    if [[ $LISTENER == https ]]; then rport=$r_tls; nport=$ngx_tls; fi
  }

  # measure NAME PID PORT [MODE]: RSS growth per WebSocket (MODE hold) or idle keep-alive
  # connection (MODE idle) held open through PORT.
  measure() {
    local name=$1 pid=$2 port=$3 mode=${4:-hold} before after opened
    # Warm-up: a few sockets opened and closed, so first-use allocations are not counted.
    mkfifo "$WORK/hold-$name-warm"
    python3 benches/load/ws.py "$mode" "$port" 10 "$WORK/hold-$name-warm" "${tls[@]}" > /dev/null &
    local warm=$!
    sleep 1; echo > "$WORK/hold-$name-warm"; wait "$warm"
    rm -f "$WORK/hold-$name-warm" "$WORK/hold-$name" "$WORK/hold-$name.txt"
    sleep 1
    before=$(rss_kib "$pid")
    mkfifo "$WORK/hold-$name"
    python3 benches/load/ws.py "$mode" "$port" "$n" "$WORK/hold-$name" "${tls[@]}" > "$WORK/hold-$name.txt" &
    local client=$!
    PIDS+=($client)
    for _ in $(seq 1 1200); do
      [[ -s $WORK/hold-$name.txt ]] && break
      kill -0 "$client" 2>/dev/null || break
      sleep 0.1
    done
    sleep "${SETTLE:-2}" # idle: buffers given back
    after=$(rss_kib "$pid")
    opened=$(cat "$WORK/hold-$name.txt")
    echo > "$WORK/hold-$name"
    wait "$client" || true
    printf '  %-8s %-22s RSS %7.1f -> %7.1f MiB   each: %5.1f KiB\n' "$name" "($opened)" \
      "$(awk -v k="$before" 'BEGIN { print k/1024 }')" "$(awk -v k="$after" 'BEGIN { print k/1024 }')" \
      "$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN { print (a-b)/n }')"
  }
  echo
  echo "$n open WebSockets ($LISTENER), one worker each, idle after one message each way:"
  proxies
  measure router "$router" "$rport"
  measure nginx "$worker" "$nport"
  echo
  echo "$n idle keep-alive connections ($LISTENER), one plain GET each:"
  proxies
  measure router "$router" "$rport" idle
  measure nginx "$worker" "$nport" idle

  echo
  echo "one WebSocket stream upstream -> client, $((flood / 1048576)) MiB, best of 3 (MB/s):"
  local name port best r
  for name in router nginx; do
    port=$rport; [[ $name == nginx ]] && port=$nport
    best=0
    for _ in 1 2 3; do
      r=$(python3 benches/load/ws.py stream "$port" "$flood" "${tls[@]}")
      ((r > best)) && best=$r
    done
    printf '  %-8s %6s MB/s\n' "$name" "$best"
    eval "tp_$name=$best"
  done
  echo "  router/nginx: $(awk -v a="$tp_router" -v b="$tp_nginx" 'BEGIN { printf "%.2f", a/b }')"
}

if [[ ${SCENARIO:-} == websockets ]]; then
  need=$(( ${WS:-1000} * 2 + 1024 ))
  if (($(ulimit -n) < need)); then
    ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  fi
  websockets
  exit 0
fi

UP=$(free_port); REDIS=$(free_port); R_HTTP=$(free_port); R_TLS=$(free_port); OPS=$(free_port)
bench_cert

# --- the trivial upstream (nginx `return 200`) -------------------------------------------------
start_upstream "$UP"

# --- Redis with ROUTES route records -----------------------------------------------------------
redis-server --bind 127.0.0.1 --port "$REDIS" --save "" --appendonly no --dir "$WORK" \
  > "$WORK/redis.log" 2>&1 & PIDS+=($!)
wait_port "$REDIS"
awk -v n="$ROUTES" 'BEGIN {
  for (i = 0; i < n; i++)
    printf "HSET hubify:route:w%d app hubify-w%d machine_id m%d region iad address 127.0.0.1\n", i, i, i
}' | redis-cli -p "$REDIS" --pipe > "$WORK/load.log"
stored=$(redis-cli -p "$REDIS" dbsize)
echo "redis: $stored route records" >&2

# --- the router ------------------------------------------------------------------------------
{ router_server 1; router_listeners "$R_HTTP" "$R_TLS"; } > "$WORK/router.toml"
cat >> "$WORK/router.toml" <<TOML
[ops]
address = "127.0.0.1:$OPS"
[redis]
url = "redis://127.0.0.1:$REDIS/"
[routes]
store = "redis"
cache_ttl = "1h"
max_stale = "1h"
cache_capacity = $ROUTES
[log]
level = "warn"
access = false
[[paths]]
prefix = "/"
port = $UP
TOML
$BIN check --config "$WORK/router.toml" >&2
${WRAP:-} $BIN run --config "$WORK/router.toml" > "$WORK/router.log" 2>&1 & PIDS+=($!)
ROUTER_PID=$!
wait_port "$UP"; wait_port "$R_HTTP"; wait_port "$R_TLS"; wait_port "$OPS"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$OPS/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
RSS_START=$(rss_mib "$ROUTER_PID")

# --- warm-up: every workspace once (wrk stops itself after ROUTES answers) ----------------------
cat > "$WORK/warm.lua" <<LUA
local i = -1
local answers = 0
request = function()
  i = (i + 1) % $ROUTES
  return wrk.format("GET", "/", { Host = "w" .. i .. ".bench.test" })
end
response = function(status)
  answers = answers + 1
  if status ~= 200 then io.stderr:write("warm-up: status " .. status .. "\n") end
  if answers >= $ROUTES then wrk.thread:stop() end
end
LUA
# wrk's own run lasts its whole -d even after the script stops it: poll the cache gauge instead.
cached() { curl -fsS "http://127.0.0.1:$OPS/metrics" | awk '/^hubify_route_cache_entries / { print $2 + 0 }'; }
t0=$(date +%s.%N)
wrk -t1 -c32 -d120s -s "$WORK/warm.lua" "http://127.0.0.1:$R_HTTP/" > "$WORK/warm.txt" 2>&1 &
WRK=$!
PIDS+=($WRK)
while kill -0 "$WRK" 2>/dev/null && (($(cached) < ROUTES)); do sleep 0.2; done
t1=$(date +%s.%N)
kill "$WRK" 2>/dev/null || true
grep -E "Non-2xx" "$WORK/warm.txt" >&2 || true
echo "warm-up: $ROUTES cache misses filled from Redis in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b-a }')" >&2
entries=$(cached)
RSS_ROUTES=$(rss_mib "$ROUTER_PID")

# --- CONNS idle keep-alive connections -----------------------------------------------------------
mkfifo "$WORK/hold"
C_PORT=$R_HTTP
[[ $LISTENER == https ]] && C_PORT=$R_TLS
# One plain GET on each connection, then held open until the script has measured.
python3 benches/load/ws.py idle "$C_PORT" "$CONNS" "$WORK/hold" "$LISTENER" > "$WORK/conns.txt" &
CLIENT=$!
PIDS+=($CLIENT)
for _ in $(seq 1 600); do
  [[ -s $WORK/conns.txt ]] && break
  kill -0 "$CLIENT" 2>/dev/null || break
  sleep 0.1
done
sleep "${SETTLE:-2}" # let the router finish each connection's request and park it (idle buffers go after 1 s)
conns=$(cat "$WORK/conns.txt")
established=$(ss -Htn state established "( sport = :$C_PORT )" | wc -l)
RSS_CONNS=$(rss_mib "$ROUTER_PID")
echo > "$WORK/hold"

echo
echo "router RSS (VmRSS), one worker thread, Redis route store:"
printf '  %-44s %8s MiB\n' "started, nothing cached" "$RSS_START"
printf '  %-44s %8s MiB\n' "$entries routes cached (of $stored in Redis)" "$RSS_ROUTES"
printf '  %-44s %8s MiB\n' "+ $CONNS idle keep-alive connections ($LISTENER)" "$RSS_CONNS"
echo "  (client: $conns; router side established: $established)"
echo "  per cached route: $(awk -v a="$RSS_ROUTES" -v b="$RSS_START" -v n="$entries" 'BEGIN { if (n > 0) printf "%.0f B", (a-b)*1048576/n; else print "n/a" }')," \
  "per idle connection: $(awk -v a="$RSS_CONNS" -v b="$RSS_ROUTES" -v n="$CONNS" 'BEGIN { printf "%.1f KiB", (a-b)*1024/n }')"
echo "  target: < 150 MiB with both -> $(awk -v a="$RSS_CONNS" 'BEGIN { print (a < 150) ? "met" : "MISSED" }')"
