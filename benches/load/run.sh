#!/usr/bin/env bash
# Whole-process throughput of hubify-edge next to nginx doing the same job, on loopback.
#
# Question answered: what does the router cost per request compared with nginx, on this machine,
# with the same number of workers? For each scenario it prints requests/s and p50/p99 latency of
# both, and the ratio router/nginx.
#
# Both proxies map 1000 workspace hosts (w0..w999.bench.test) to one trivial upstream (an nginx
# `return 200`), and wrk rotates the Host header over all 1000 on every request.
#
#   benches/load/run.sh                 # all scenarios, 10 s each
#   DURATION=30 WORKERS=1 CONNS=64 benches/load/run.sh plain tls-h1
#   BIN=/tmp/hubify-edge-before benches/load/run.sh   # another build of the router (no cargo build)
#   FAST_PATH=false benches/load/run.sh plain          # HTTP/1.1 through Pingora's engine only
#
# Scenarios: plain (HTTP keep-alive forward), tls-h1, tls-h2 (h2load), replay (fly-replay answers,
# against the no-proxy ceiling: the upstream served directly), tls-new (a new TLS connection per
# request). Only loopback addresses are used; every run is bounded by DURATION. The optional
# scenario `bare` (not in the default list) drives a Pingora proxy with no logic at all
# (benches/examples/bare_pingora.rs) the same way as `plain`: the framework floor.
source "$(dirname "$0")/common.sh" load

DURATION=${DURATION:-10}
WORKERS=${WORKERS:-1}
CONNS=${CONNS:-64}
N_HOSTS=1000
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(plain tls-h1 tls-h2 replay tls-new)



BARE=0
for s in "${SCENARIOS[@]}"; do [[ $s == bare ]] && BARE=1; done
if ((BARE)); then
  cargo build --release -p hubify-edge-benches --example bare_pingora >&2
fi

UP=$(free_port); B_HTTP=$(free_port); R_HTTP=$(free_port); R_TLS=$(free_port); R_REPLAY=$(free_port)
N_HTTP=$(free_port); N_TLS=$(free_port); N_REPLAY=$(free_port)

# A wildcard certificate both proxies serve.
bench_cert

# --- the trivial upstream -------------------------------------------------------------------
start_upstream "$UP"

# --- nginx doing the router's job ---------------------------------------------------------------
nginx_router "$UP" "$N_HTTP" "$N_REPLAY" "$N_TLS" $(seq 0 $((N_HOSTS - 1)))
nginx -c "$WORK/ngx/nginx.conf" -g "daemon off; worker_processes $WORKERS;" & PIDS+=($!)

# --- the router -----------------------------------------------------------------------------
{
  router_server "$WORKERS"
  router_listeners "$R_HTTP" "$R_TLS"
  cat <<TOML
[log]
level = "warn"
access = false
[[paths]]
prefix = "/"
port = $UP
TOML
  static_routes $(seq 0 $((N_HOSTS - 1)))
} > "$WORK/router.toml"
$BIN check --config "$WORK/router.toml" >&2
$BIN run --config "$WORK/router.toml" > "$WORK/router.log" 2>&1 & PIDS+=($!)
ROUTER_PID=$!

# The replay listener is a second router process in replay mode (its own listener config).
{
  sed -n '1,/^\[listeners.https\]/p' "$WORK/router.toml" | sed '$d'
  printf '[listeners.http]\naddress = "127.0.0.1:%s"\ndispatch = "replay"\n' "$R_REPLAY"
  printf '[replay]\ntimeout = "5s"\nfallback = "force_self"\n[log]\nlevel = "warn"\naccess = false\n[[paths]]\nprefix = "/"\nport = %s\n' "$UP"
  sed -n '/^\[\[routes.static\]\]/,$p' "$WORK/router.toml"
} > "$WORK/replay.toml"
REPLAY_OK=1
if $BIN check --config "$WORK/replay.toml" >&2; then
  $BIN run --config "$WORK/replay.toml" > "$WORK/replay.log" 2>&1 & PIDS+=($!)
else
  REPLAY_OK=0
fi

if ((BARE)); then
  target/release/examples/bare_pingora "127.0.0.1:$B_HTTP" "127.0.0.1:$UP" > "$WORK/bare.log" 2>&1 & PIDS+=($!)
  wait_port "$B_HTTP"
fi

for p in $UP $N_HTTP $N_TLS $N_REPLAY $R_HTTP $R_TLS; do wait_port "$p"; done
((REPLAY_OK)) && wait_port "$R_REPLAY"

cat > "$WORK/rotate.lua" <<'LUA'
local i = 0
local hosts = {}
for n = 0, 999 do hosts[n] = { Host = "w" .. n .. ".bench.test" } end
request = function()
  i = (i + 1) % 1000
  return wrk.format("GET", "/", hosts[i])
end
LUA
cat > "$WORK/rotate-close.lua" <<'LUA'
local i = 0
local hosts = {}
for n = 0, 999 do hosts[n] = { Host = "w" .. n .. ".bench.test", Connection = "close" } end
request = function()
  i = (i + 1) % 1000
  return wrk.format("GET", "/", hosts[i])
end
LUA

# wrk → "rps p50_ms p99_ms"
run_wrk() { # url script
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$2" "$1" 2>&1)
  if grep -q "Non-2xx or 3xx responses" <<<"$out"; then
    echo "warning: non-2xx/3xx responses from $1" >&2
  fi
  awk '
    function ms(v) { if (v ~ /us$/) { sub(/us$/,"",v); return v/1000 } if (v ~ /ms$/) { sub(/ms$/,"",v); return v+0 } if (v ~ /s$/) { sub(/s$/,"",v); return v*1000 } return v }
    /Requests\/sec/ { rps=$2 }
    /^ +50%/ { p50=ms($2) }
    /^ +99%/ { p99=ms($2) }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }' <<<"$out"
}

# h2load → "rps p50_ms p99_ms": throughput from h2load's summary, percentiles from its per-request
# log (`--log-file`: start, status, microseconds to the end of the response). One :authority for
# all requests: h2load cannot rotate it per request.
run_h2() { # port
  local out log="$WORK/h2load-$1.log"
  rm -f "$log"
  out=$(h2load -c"$CONNS" -m10 -t1 -D"$DURATION" --log-file="$log" -H ':authority: w7.bench.test' "https://127.0.0.1:$1/" 2>&1)
  if grep -q "[1-9][0-9]* failed\|[1-9][0-9]* errored" <<<"$(grep '^requests:' <<<"$out")"; then
    echo "warning: h2load failures on port $1: $(grep '^requests:' <<<"$out")" >&2
  fi
  local rps pct
  rps=$(awk '/^finished in/ { gsub(",","",$4); print $4 }' <<<"$out")
  pct=$(cut -f3 "$log" | sort -n | awk '{ v[NR]=$1 } END { if (NR) printf "%.3f %.3f", v[int(NR*0.5)+1]/1000, v[int(NR*0.99)+1]/1000 }')
  printf '%.0f %s\n' "$rps" "$pct"
}

printf '\n%-9s | %10s %8s %8s | %10s %8s %8s | %s\n' scenario "router r/s" "p50 ms" "p99 ms" "nginx r/s" "p50 ms" "p99 ms" "ratio (router/nginx)"
printf '%s\n' "----------+-------------------------------+-------------------------------+---------------------"
report() { # name router_result other_result [other_name]
  read -r r1 r2 r3 <<<"$2"; read -r n1 n2 n3 <<<"$3"
  local ratio
  ratio=$(awk -v a="$r1" -v b="$n1" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }')
  printf '%-9s | %10s %8s %8s | %10s %8s %8s | %s%s\n' "$1" "$r1" "$r2" "$r3" "$n1" "$n2" "$n3" "$ratio" "${4:+ (vs $4)}"
}

for s in "${SCENARIOS[@]}"; do
  case $s in
    plain)   report plain "$(run_wrk "http://127.0.0.1:$R_HTTP/" "$WORK/rotate.lua")" "$(run_wrk "http://127.0.0.1:$N_HTTP/" "$WORK/rotate.lua")" ;;
    bare)    report bare "$(run_wrk "http://127.0.0.1:$B_HTTP/" "$WORK/rotate.lua")" "$(run_wrk "http://127.0.0.1:$N_HTTP/" "$WORK/rotate.lua")" ;;
    tls-h1)  report tls-h1 "$(run_wrk "https://127.0.0.1:$R_TLS/" "$WORK/rotate.lua")" "$(run_wrk "https://127.0.0.1:$N_TLS/" "$WORK/rotate.lua")" ;;
    tls-h2)  report tls-h2 "$(run_h2 "$R_TLS")" "$(run_h2 "$N_TLS")" ;;
    tls-new) report tls-new "$(run_wrk "https://127.0.0.1:$R_TLS/" "$WORK/rotate-close.lua")" "$(run_wrk "https://127.0.0.1:$N_TLS/" "$WORK/rotate-close.lua")" ;;
    replay)
      if ((REPLAY_OK)); then
        report replay "$(run_wrk "http://127.0.0.1:$R_REPLAY/" "$WORK/rotate.lua")" "$(run_wrk "http://127.0.0.1:$N_REPLAY/" "$WORK/rotate.lua")"
        report replay "$(run_wrk "http://127.0.0.1:$R_REPLAY/" "$WORK/rotate.lua")" "$(run_wrk "http://127.0.0.1:$UP/" "$WORK/rotate.lua")" "no-proxy ceiling"
      else
        echo "replay    | router build has no replay dispatch yet (config check failed above)"
      fi ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
echo
echo "router fast_path = $FAST_PATH"
echo "workers: $WORKERS each; wrk -t1 -c$CONNS -d${DURATION}s; hosts rotated over $N_HOSTS workspaces"
echo "router RSS: $(ps -o rss= -p "$ROUTER_PID" | awk '{printf "%.1f MiB", $1/1024}')"
