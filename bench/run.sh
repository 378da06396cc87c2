#!/usr/bin/env bash
# Benchmarks meshwork against nginx, haproxy and a direct connection, in one run, on the
# same backends, and writes the results as tables (BENCHMARKS.md). See bench/README.md.
#
#   bench/run.sh [--quick] [--out FILE]
#
#   --quick       a smoke check: short runs (under 3 minutes), written to
#                 bench/BENCHMARKS.quick.md unless --out is given.
#   --out FILE    where the results go (default: BENCHMARKS.md at the repo root; only the
#                 part between the results markers is replaced).
#   MESHWORK_BIN=/path   use this binary instead of `cargo build --release -p meshwork`
#                        (MESHWORK_COMMIT=sha labels it in the report).
#   BENCH_PORT_BASE=N    first port of the benchmark-only range (default 28100).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

QUICK=false
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=true ;;
    --out) OUT=$2; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  if $QUICK; then OUT="$here/BENCHMARKS.quick.md"; else OUT="$root/BENCHMARKS.md"; fi
fi

work=$(mktemp -d /tmp/meshwork-bench.XXXXXX)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
cleanup() { stop_all; if [ -n "${BENCH_KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Durations (seconds) of each kind of run.
if $QUICK; then
  SAT=2 RATE=2 TLS=2 H2=1 ISTIO=2 FOOT=2 WARM=0.5 HANDSHAKES=1000
else
  SAT=15 RATE=20 TLS=10 H2=10 ISTIO=30 FOOT=10 WARM=2 HANDSHAKES=8000
fi
SCALE_SERVICES=1000 SCALE_ROUTES=5 # section f: 1,000 services, 5,000 routes
CONNS=64          # connections of the keep-alive runs
TARGETS=(meshwork nginx haproxy direct)
PROXIES=(meshwork nginx haproxy)

# ---------------------------------------------------------------------------------------
# Results: rows of named sections; one cell per target.

declare -A CELL=() ROW_LABEL=() ROW_CMD=()
declare -A SECTION_ROWS=()
SECTIONS=()
SECTION_TITLE=()

section() { SECTIONS+=("$1"); SECTION_TITLE+=("$2"); SECTION_ROWS[$1]=""; }
# row SECTION KEY LABEL COMMAND
row() {
  SECTION_ROWS[$1]+=" $2"
  ROW_LABEL[$2]=$3
  ROW_CMD[$2]=$4
}
cell() { CELL[$1|$2]=$3; log "$1 [$2] = $3"; }

# ---------------------------------------------------------------------------------------
# Setup.

ensure_packages() {
  local need=() cmd
  for cmd in wrk:wrk h2load:nghttp2-client nginx:nginx-light haproxy:haproxy \
    openssl:openssl curl:curl taskset:util-linux ss:iproute2; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing: ${need[*]} (run as root to install them)"
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # (On a systemd host the nginx package also starts a system nginx on port 80; it is
  # neither used nor stopped here.)
}

build_meshwork() {
  if [ -n "${MESHWORK_BIN:-}" ]; then
    [ -x "$MESHWORK_BIN" ] || die "MESHWORK_BIN=$MESHWORK_BIN is not executable"
    MW=$MESHWORK_BIN
    return
  fi
  log "building meshwork (release)"
  (cd "$root" && cargo build --release -q -p meshwork)
  MW="${CARGO_TARGET_DIR:-$root/target}/release/meshwork"
}

machine_info() {
  CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  MEM_GIB=$(awk '/^MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
  COMMIT=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT+=" (with uncommitted changes)"
  fi
  if [ -n "${MESHWORK_BIN:-}" ]; then
    # A given binary may come from another commit: MESHWORK_COMMIT names it.
    COMMIT="${MESHWORK_COMMIT:-unknown} (MESHWORK_BIN; the repo is at $COMMIT)"
  fi
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  BUSY_BEFORE=$(busy_processes)
  VERSIONS="$("$MW" --version 2>&1 | head -1); $(nginx -v 2>&1 | sed 's/.*: //'); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version | head -1)"
}

# busy_processes: what else used at least 20% of a core when the run started.
busy_processes() {
  top -bn1 -w 200 2>/dev/null | awk 'NR > 7 && $9 + 0 >= 20 {print $12 " " $9 "%"}' | head -5 | paste -sd, - || true
}

# ---------------------------------------------------------------------------------------
# Backends and proxies.

start_backends() {
  alloc_port ECHO_PORT
  alloc_port STATIC_PORT
  TOKIO_WORKER_THREADS=1 start_bg echo "$BACKEND_CPU" "$MW" echo --port "$ECHO_PORT" --name echo
  ECHO_PID=$LAST_PID
  nginx_static_config "$work/static" "$STATIC_PORT"
  start_bg static "$BACKEND_CPU" nginx -c "$work/static/nginx.conf" -e "$work/static/error.log"
  STATIC_PID=$LAST_PID
  wait_http "http://127.0.0.1:$ECHO_PORT/?size=0" || die "echo backend did not start"
  wait_http "http://127.0.0.1:$STATIC_PORT/static" || die "nginx control backend did not start"
  gen_cert "$work"
  grpc_frame "$work/grpc.bin"
  head -c 1024 /dev/zero | tr '\0' 'x' >"$work/body1k"
}

# start_meshwork NAME CONFIGDIR [ARGS...]: sets MW_PID, MW_ADMIN, MW_HEALTH.
start_meshwork() {
  local name=$1 dir=$2
  shift 2
  alloc_port MW_ADMIN
  alloc_port MW_HEALTH
  TOKIO_WORKER_THREADS=1 start_bg "$name" "$PROXY_CPU" "$MW" up "$dir" \
    --admin "127.0.0.1:$MW_ADMIN" --health "127.0.0.1:$MW_HEALTH" "$@"
  MW_PID=$LAST_PID
  wait_http "http://127.0.0.1:$MW_HEALTH/healthz/ready" 200 600 || die "meshwork did not get ready ($work/$name.log)"
}

start_nginx() {
  nginx -t -q -c "$1/nginx.conf" -e "$1/error.log" || die "nginx config rejected"
  start_bg "$(basename "$1")" "$PROXY_CPU" nginx -c "$1/nginx.conf" -e "$1/error.log"
  NGINX_PID=$LAST_PID
}

start_haproxy() {
  haproxy -c -q -f "$1" || die "haproxy config rejected"
  start_bg "$(basename "$1" .cfg)" "$PROXY_CPU" haproxy -db -f "$1"
  HAPROXY_PID=$LAST_PID
}

start_proxies() {
  alloc_port MW_HTTP; alloc_port MW_TLS
  alloc_port NG_HTTP; alloc_port NG_H2C; alloc_port NG_TLS
  alloc_port HA_HTTP; alloc_port HA_H2C; alloc_port HA_TLS
  mw_base_config "$work/mw" "$MW_HTTP" "$MW_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  start_meshwork meshwork "$work/mw"
  nginx_proxy_config "$work/nginx" "$NG_HTTP" "$NG_H2C" "$NG_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  start_nginx "$work/nginx"
  haproxy_config "$work/haproxy.cfg" "$HA_HTTP" "$HA_H2C" "$HA_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  start_haproxy "$work/haproxy.cfg"
  local p
  for p in "$NG_HTTP" "$HA_HTTP"; do
    wait_http "http://127.0.0.1:$p/static" || die "a proxy on port $p did not start"
  done
  sleep 1
  declare -gA PID=([meshwork]=$MW_PID [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [direct]=$ECHO_PID)
  declare -gA HTTP=([meshwork]=$MW_HTTP [nginx]=$NG_HTTP [haproxy]=$HA_HTTP [direct]=$ECHO_PORT)
  declare -gA H2C=([meshwork]=$MW_HTTP [nginx]=$NG_H2C [haproxy]=$HA_H2C [direct]=$ECHO_PORT)
  declare -gA TLSP=([meshwork]=$MW_TLS [nginx]=$NG_TLS [haproxy]=$HA_TLS)
  check_routes
}

# check_routes: every proxy answers each route before anything is measured.
check_routes() {
  local t code path
  for t in "${PROXIES[@]}"; do
    for path in "/e?size=0" /static; do
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${HTTP[$t]}$path")
      [ "$code" = 200 ] || die "$t: GET $path answered $code"
    done
    code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:${TLSP[$t]}/e?size=0")
    [ "$code" = 200 ] || die "$t: HTTPS answered $code"
    code=$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code}' \
      -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$work/grpc.bin" \
      "http://127.0.0.1:${H2C[$t]}/bench.Echo/Unary")
    [ "$code" = 200 ] || die "$t: gRPC answered $code"
  done
}

# url TARGET BACKEND: the keep-alive URL of a target for the echo or the static backend.
url() {
  case "$2" in
    echo) echo "http://127.0.0.1:${HTTP[$1]}/e?size=0" ;;
    static)
      if [ "$1" = direct ]; then echo "http://127.0.0.1:$STATIC_PORT/static"
      else echo "http://127.0.0.1:${HTTP[$1]}/static"; fi ;;
  esac
}

# ---------------------------------------------------------------------------------------
# Load runners. Each is bounded by `timeout`; each records the proxy's CPU ticks.

# measured PID CMD...: runs CMD (a load generator) and sets TICKS (CPU ticks of PID and
# its children during the run) and WALL_MS.
measured() {
  local pid=$1 t0 t1 s
  shift
  t0=$(cpu_ticks "$pid")
  s=$(now_ms)
  "$@"
  WALL_MS=$(($(now_ms) - s))
  t1=$(cpu_ticks "$pid")
  TICKS=$((t1 - t0))
}

# warm_wrk CONNS URL [wrk args...]: a short unmeasured run (opens the upstream pools).
warm_wrk() {
  local conns=$1 url=$2
  shift 2
  client timeout -k 5 30 wrk -t1 -c"$conns" -d"${WARM}s" "$@" "$url" >/dev/null 2>&1 || true
}

# run_wrk OUTFILE DURATION CONNS URL [wrk args...]
run_wrk() {
  local out=$1 dur=$2 conns=$3 url=$4
  shift 4
  client timeout -k 5 $((dur + 30)) wrk -t1 -c"$conns" -d"${dur}s" --latency "$@" "$url" >"$out" 2>&1 || true
}

# run_h2load OUTFILE DURATION h2load-args...: a timed h2load run with a warm-up second.
run_h2load() {
  local out=$1 dur=$2
  shift 2
  client timeout -k 5 $((dur + 40)) h2load -t1 -D "$dur" --warm-up-time=1 "$@" >"$out" 2>&1 || true
}

# run_rate OUT RATE CONNS DURATION URL [h2load args...]: RATE req/s in all over CONNS
# keep-alive HTTP/1.1 connections, with a per-request log in OUT.log. h2load's --rps
# timers of one process tick in step, so the connections are spread over up to 16 h2load
# processes whose starts are staggered over one period: requests arrive evenly instead of
# in bursts of CONNS.
run_rate() {
  local out=$1 rate=$2 conns=$3 dur=$4 url=$5 procs=16 k delay pids=()
  shift 5
  [ "$conns" -lt "$procs" ] && procs=$conns
  local per=$((conns / procs)) rps
  rps=$(rps_per_conn "$rate" "$conns")
  for ((k = 0; k < procs; k++)); do
    delay=$(awk -v k="$k" -v p="$procs" -v c="$conns" -v r="$rate" 'BEGIN { printf "%.4f", k * c / r / p }')
    (
      sleep "$delay"
      client timeout -k 5 $((dur + 40)) h2load --h1 -t1 -c"$per" --rps="$rps" -D "$dur" \
        --warm-up-time=1 --log-file="$out.$k.log" "$@" "$url" >"$out.$k.txt" 2>&1 || true
    ) &
    pids+=($!)
  done
  for k in "${pids[@]}"; do wait "$k" || true; done
  cat "$out".*.log >"$out.log" 2>/dev/null || : >"$out.log"
}

# rate_done OUT: 2xx answers of a run_rate run, warm-up second included (for CPU per request).
rate_done() {
  local n=0 f
  for f in "$1".*.txt; do n=$((n + $(h2load_done "$f"))); done
  awk -v n="$n" -v d="$2" 'BEGIN { printf "%d", n * (d + 1) / d }'
}

# rate_cmd RATE CONNS DURATION: how run_rate runs, for the report.
rate_cmd() {
  local procs=16
  [ "$2" -lt "$procs" ] && procs=$2
  echo "$procs x h2load --h1 -t1 -c$(($2 / procs)) --rps=$(rps_per_conn "$1" "$2") -D $3 --warm-up-time=1 --log-file=LOG (starts staggered over $(awk -v c="$2" -v r="$1" 'BEGIN { printf "%g", 1000 * c / r }') ms)"
}

# cpu_pct: the proxy's CPU use during the last measured run, in % of one core.
cpu_pct() { awk -v t="$TICKS" -v hz="$CLK_TCK" -v ms="$WALL_MS" 'BEGIN { printf "%.0f", 100 * t / hz / (ms / 1000) }'; }
# cpu_per_k REQUESTS: CPU-seconds per 1,000 requests during the last measured run.
cpu_per_k() { awk -v t="$TICKS" -v hz="$CLK_TCK" -v n="$1" 'BEGIN { if (n > 0) printf "%.3f", t / hz / n * 1000; else print "ERR" }'; }

# ---------------------------------------------------------------------------------------
# a. HTTP/1.1 keep-alive: saturation, then latency at fixed rates.

bench_http1() {
  section a "a. HTTP/1.1 keep-alive through the gateway ($CONNS connections)"
  local backend t out rate key
  for backend in echo static; do
    row a "a.sat.$backend" "Saturation, backend $backend (req/s)" \
      "wrk -t1 -c$CONNS -d${SAT}s --latency $(url meshwork "$backend" | sed -E 's/:[0-9]+\//:PORT\//')"
    row a "a.cpu.$backend" "  proxy CPU at saturation, backend $backend (% of one core)" "(from /proc/PID/stat during the row above)"
    row a "a.cpuk.$backend" "  proxy CPU-seconds per 1,000 requests at saturation, backend $backend" "(from /proc/PID/stat during the row above)"
    for t in "${TARGETS[@]}"; do
      out="$work/a.sat.$backend.$t"
      warm_wrk "$CONNS" "$(url "$t" "$backend")"
      measured "${PID[$t]}" run_wrk "$out" "$SAT" "$CONNS" "$(url "$t" "$backend")"
      cell "a.sat.$backend" "$t" "$(wrk_rps "$out")"
      if [ "$t" != direct ]; then
        cell "a.cpu.$backend" "$t" "$(cpu_pct)"
        cell "a.cpuk.$backend" "$t" "$(cpu_per_k "$(wrk_requests "$out")")"
      fi
    done
  done
  for rate in 1000 10000; do
    for p in 50 99 99.9; do
      row a "a.r$rate.p$p" "$rate req/s, p$p latency (ms)" \
        "$(rate_cmd "$rate" "$CONNS" "$RATE") $(url meshwork echo | sed -E 's/:[0-9]+\//:PORT\//')"
    done
    for t in "${TARGETS[@]}"; do
      out="$work/a.r$rate.$t"
      run_rate "$out" "$rate" "$CONNS" "$RATE" "$(url "$t" echo)"
      percentiles "$out.log" 50 99 99.9
      cell "a.r$rate.p50" "$t" "${PCT[0]}"
      cell "a.r$rate.p99" "$t" "${PCT[1]}"
      cell "a.r$rate.p99.9" "$t" "${PCT[2]}"
    done
  done
}

rps_per_conn() { awk -v r="$1" -v c="$2" 'BEGIN { printf "%g", r / c }'; }

# ---------------------------------------------------------------------------------------
# a (cont.). What Istio's standard metrics cost: a second gateway on the same config,
# with --metrics, at saturation, against the first (metrics off) in the same run.

bench_metrics_cost() {
  local out off on u
  alloc_port MWM_HTTP; alloc_port MWM_TLS; alloc_port MWM_METRICS
  mw_base_config "$work/mw-metrics" "$MWM_HTTP" "$MWM_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  local off_pid=$MW_PID
  start_meshwork meshwork-metrics "$work/mw-metrics" --metrics "127.0.0.1:$MWM_METRICS"
  local on_pid=$MW_PID
  MW_PID=$off_pid
  u="http://127.0.0.1:$MWM_HTTP/e?size=0"
  row a "a.sat.metrics" "Saturation with Istio's metrics on (--metrics), backend echo (req/s)" \
    "wrk -t1 -c$CONNS -d${SAT}s --latency http://127.0.0.1:PORT/e?size=0 (meshwork up --metrics ADDR)"
  row a "a.metrics.ratio" "  metrics on / off, at saturation (runs alternated: off, on, off, on)" \
    "(the sums of the on runs over the off runs, measured back to back)"
  local off_url i rps
  off_url=$(url meshwork echo)
  warm_wrk "$CONNS" "$u"
  warm_wrk "$CONNS" "$off_url"
  off=0 on=0
  for i in 1 2; do
    out="$work/a.sat.metrics.off.$i"
    measured "$off_pid" run_wrk "$out" "$SAT" "$CONNS" "$off_url"
    rps=$(wrk_rps "$out"); rps=${rps%% *}; [[ $rps =~ ^[0-9]+$ ]] || rps=0; off=$((off + rps))
    out="$work/a.sat.metrics.$i"
    measured "$on_pid" run_wrk "$out" "$SAT" "$CONNS" "$u"
    rps=$(wrk_rps "$out"); rps=${rps%% *}; [[ $rps =~ ^[0-9]+$ ]] || rps=0; on=$((on + rps))
  done
  cell "a.sat.metrics" meshwork "$((on / 2))"
  cell "a.metrics.ratio" meshwork "$(awk -v a="$on" -v b="$off" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "ERR" }')"
}

# ---------------------------------------------------------------------------------------
# b. HTTPS termination.

bench_tls() {
  section b "b. HTTPS termination (TLS 1.3, RSA-2048 certificate, X25519; 16 parallel clients)"
  local curl_cmd="curl -sk --http1.1 -Z --parallel-max 16 -H 'Connection: close' -o /dev/null -w '%{http_code} %{num_connects}\\n' 'https://127.0.0.1:PORT/e?size=0&n=[1-$HANDSHAKES]'"
  row b b.new "New handshakes/s (a connection per request)" "$curl_cmd --no-sessionid"
  row b b.new.cpu "  proxy CPU-ms per new handshake (connection + request)" "(from /proc/PID/stat during the row above)"
  row b b.new.cap "  capacity of one core, new handshakes/s (1 / CPU per handshake)" "(from the row above)"
  row b b.resumed "Resumed handshakes/s (curl's session cache: TLS 1.3 tickets)" "$curl_cmd"
  row b b.resumed.cpu "  proxy CPU-ms per resumed handshake (connection + request)" "(from /proc/PID/stat during the row above)"
  row b b.resumed.cap "  capacity of one core, resumed handshakes/s" "(from the row above)"
  row b b.ka "Keep-alive over TLS (req/s, $CONNS connections)" \
    "wrk -t1 -c$CONNS -d${TLS}s --latency https://127.0.0.1:PORT/e?size=0"
  row b b.ka.cpu "  proxy CPU at keep-alive over TLS (% of one core)" "(from /proc/PID/stat during the row above)"
  local t out key
  for t in "${PROXIES[@]}"; do
    for key in new resumed; do
      out="$work/b.$key.$t"
      handshakes "$t" 200 "$key" "$out" # warm-up: fills the session cache
      measured "${PID[$t]}" handshakes "$t" "$HANDSHAKES" "$key" "$out"
      cell "b.$key" "$t" "$(awk -v n="$HS_OK" -v ms="$WALL_MS" 'BEGIN { printf "%.0f", n / (ms / 1000) }')$HS_ERR"
      cell "b.$key.cpu" "$t" "$(cpu_per_k "$HS_OK")"
      cell "b.$key.cap" "$t" "$(awk -v t="$TICKS" -v hz="$CLK_TCK" -v n="$HS_OK" 'BEGIN { if (t > 0) printf "%.0f", n / (t / hz); else print "—" }')"
    done
    out="$work/b.ka.$t"
    warm_wrk "$CONNS" "https://127.0.0.1:${TLSP[$t]}/e?size=0"
    measured "${PID[$t]}" run_wrk "$out" "$TLS" "$CONNS" "https://127.0.0.1:${TLSP[$t]}/e?size=0"
    cell b.ka "$t" "$(wrk_rps "$out")"
    cell b.ka.cpu "$t" "$(cpu_pct)"
  done
  for key in b.new b.new.cpu b.new.cap b.resumed b.resumed.cpu b.resumed.cap b.ka b.ka.cpu; do cell "$key" direct "n/a"; done
}

# handshakes TARGET N new|resumed OUT: N HTTPS requests, each on a new connection (16 at
# a time), with or without TLS session resumption; sets HS_OK (answered 200 on a new
# connection) and HS_ERR (a note when some were not).
handshakes() {
  local t=$1 n=$2 mode=$3 out=$4 args=()
  [ "$mode" = new ] && args+=(--no-sessionid)
  client timeout -k 5 120 curl -sk --http1.1 -Z --parallel-max 16 "${args[@]}" -H 'Connection: close' \
    -o /dev/null -w '%{http_code} %{num_connects}\n' \
    "https://127.0.0.1:${TLSP[$t]}/e?size=0&n=[1-$n]" >"$out" 2>/dev/null || true
  HS_OK=$(grep -c '^200 1$' "$out" || true)
  HS_ERR=""
  [ "$HS_OK" -lt "$n" ] && HS_ERR=" ($((n - HS_OK)) err)"
  return 0
}

# ---------------------------------------------------------------------------------------
# c. HTTP/2 and gRPC unary (h2load, 16 connections x 10 streams).

bench_h2() {
  section c "c. HTTP/2 and gRPC unary through the gateway (h2load, 16 connections x 10 streams)"
  local h2args="-c16 -m10"
  row c c.h2c "HTTP/2 cleartext (h2c) to the proxy, HTTP/1.1 upstream (req/s)" \
    "h2load -t1 $h2args -D $H2 --warm-up-time=1 http://127.0.0.1:PORT/e?size=0"
  row c c.h2tls "HTTP/2 over TLS (ALPN h2) to the proxy, HTTP/1.1 upstream (req/s)" \
    "h2load -t1 $h2args -D $H2 --warm-up-time=1 https://127.0.0.1:PORT/e?size=0"
  row c c.grpc "gRPC unary, h2c upstream (req/s)" \
    "h2load -t1 $h2args -D $H2 --warm-up-time=1 -d grpc.bin -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:PORT/bench.Echo/Unary"
  row c c.grpc.cpu "  proxy CPU-seconds per 1,000 gRPC calls" "(from /proc/PID/stat during the row above)"
  local t out
  for t in "${TARGETS[@]}"; do
    out="$work/c.h2c.$t"
    # shellcheck disable=SC2086
    run_h2load "$out" "$H2" $h2args "http://127.0.0.1:${H2C[$t]}/e?size=0"
    cell c.h2c "$t" "$(h2load_rps "$out")"
    if [ "$t" = direct ]; then
      cell c.h2tls "$t" "n/a"
    else
      out="$work/c.h2tls.$t"
      # shellcheck disable=SC2086
      run_h2load "$out" "$H2" $h2args "https://127.0.0.1:${TLSP[$t]}/e?size=0"
      cell c.h2tls "$t" "$(h2load_rps "$out")"
    fi
    out="$work/c.grpc.$t"
    # shellcheck disable=SC2086
    measured "${PID[$t]}" run_h2load "$out" "$H2" $h2args -d "$work/grpc.bin" \
      -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:${H2C[$t]}/bench.Echo/Unary"
    cell c.grpc "$t" "$(h2load_rps "$out")"
    if [ "$t" = direct ]; then
      cell c.grpc.cpu "$t" "n/a"
    else
      # h2load's warm-up second is not in its count; add its share.
      cell c.grpc.cpu "$t" "$(cpu_per_k "$(awk -v n="$(h2load_done "$out")" -v d="$H2" 'BEGIN { printf "%d", n * (d + 1) / d }')")"
    fi
  done
}

# ---------------------------------------------------------------------------------------
# d. Added latency at Istio's standard setting: 1,000 req/s, 16 connections, 1 KiB bodies.

bench_istio() {
  section d "d. Added latency at Istio's setting: 1,000 req/s, 16 connections, 1 KiB request and response bodies"
  local p t out
  for p in 50 90 99; do
    row d "d.p$p" "p$p latency (ms)" \
      "$(rate_cmd 1000 16 "$ISTIO") -d body1k http://127.0.0.1:PORT/e?size=1024"
  done
  for p in 50 90 99; do
    row d "d.add.p$p" "p$p added by the proxy (ms, proxy − direct)" "(difference of the rows above)"
  done
  declare -A lat=()
  for t in "${TARGETS[@]}"; do
    out="$work/d.$t"
    run_rate "$out" 1000 16 "$ISTIO" "http://127.0.0.1:${HTTP[$t]}/e?size=1024" -d "$work/body1k"
    percentiles "$out.log" 50 90 99
    lat[$t.50]=${PCT[0]} lat[$t.90]=${PCT[1]} lat[$t.99]=${PCT[2]}
    for p in 50 90 99; do cell "d.p$p" "$t" "${lat[$t.$p]}"; done
  done
  for t in "${TARGETS[@]}"; do
    for p in 50 90 99; do
      cell "d.add.p$p" "$t" "$(awk -v a="${lat[$t.$p]%% *}" -v d="${lat[direct.$p]%% *}" 'BEGIN { printf "%.3f", a - d }')"
    done
  done
}

# ---------------------------------------------------------------------------------------
# e. Footprint: memory idle, with 1,000 routes / 100 clusters, and under load; CPU.

bench_footprint() {
  section e "e. Footprint (RSS summed over the proxy's processes; CPU from /proc/PID/stat)"
  row e e.rss.idle "RSS idle, benchmark config (MiB)" "grep VmRSS /proc/PID/status (nginx: master + worker)"
  row e e.rss.many "RSS idle, 1,000 routes and 100 clusters (MiB)" "same, after start with the generated 100-service config"
  row e e.rss.load "RSS under load, 1,000 routes (MiB)" \
    "$(rate_cmd 5000 "$CONNS" "$FOOT") -H ':authority: svc-0099.bench.test' http://127.0.0.1:PORT/p9 (sampled at the end)"
  row e e.cpuk.load "CPU-seconds per 1,000 requests at 5,000 req/s, 1,000 routes (last route)" "(the row above)"
  row e e.cpuk.base "CPU-seconds per 1,000 requests at 5,000 req/s, benchmark config" \
    "$(rate_cmd 5000 "$CONNS" "$FOOT") http://127.0.0.1:PORT/e?size=0"
  row e e.rss.alone "RSS idle, the gateway as \`meshwork proxy\`, its control plane apart (MiB)" \
    "meshwork control --config DIR in its own process; meshwork proxy --role gateway --control-plane-auth-policy NONE (grep VmRSS, once it serves)"
  local t out n
  for t in "${PROXIES[@]}"; do cell e.rss.idle "$t" "$(mib "${IDLE_RSS[$t]}")"; done
  cell e.rss.idle direct "n/a"

  # The data plane alone, as a mesh runs it: the benchmark config on other ports, compiled
  # by \`meshwork control\` and served by \`meshwork proxy\`.
  alloc_port A_HTTP; alloc_port A_TLS; alloc_port A_XDS; alloc_port A_SDS
  alloc_port A_ADMIN; alloc_port A_STATUS
  mw_base_config "$work/mw-alone" "$A_HTTP" "$A_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  start_bg control-alone "$BACKEND_CPU" "$MW" control --config "$work/mw-alone" \
    --listen "127.0.0.1:$A_XDS" --secure-listen "127.0.0.1:$A_SDS" --state-dir "$work/control-state"
  local control_pid=$LAST_PID
  sleep 1
  TOKIO_WORKER_THREADS=1 start_bg proxy-alone "$PROXY_CPU" "$MW" proxy --role gateway \
    --control-plane "127.0.0.1:$A_XDS" --control-plane-auth-policy NONE --ip 127.0.0.1 \
    --namespace istio-system --labels istio=ingressgateway \
    --admin "127.0.0.1:$A_ADMIN" --status "127.0.0.1:$A_STATUS"
  local proxy_pid=$LAST_PID
  wait_http "http://127.0.0.1:$A_HTTP/static" 200 600 || die "meshwork proxy did not serve ($work/proxy-alone.log)"
  sleep 1
  cell e.rss.alone meshwork "$(mib "$(rss_kb "$proxy_pid")")"
  for t in nginx haproxy direct; do cell e.rss.alone "$t" "n/a"; done
  stop_pid "$proxy_pid"; stop_pid "$control_pid"

  # The 1,000-route configs, started fresh.
  alloc_port M_HTTP; alloc_port M_TLS; alloc_port N_HTTP; alloc_port N_H2C; alloc_port N_TLS
  alloc_port H_HTTP; alloc_port H_H2C; alloc_port H_TLS
  mw_many_config "$work/mw-many" "$M_HTTP" "$M_TLS" "$work" "$ECHO_PORT" 100 10 4
  start_meshwork meshwork-many "$work/mw-many"
  nginx_many "$work/nginx-many.inc" 100 10 "$ECHO_PORT" "$N_HTTP"
  NGINX_EXTRA="$work/nginx-many.inc" nginx_proxy_config "$work/nginx-many" "$N_HTTP" "$N_H2C" "$N_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  start_nginx "$work/nginx-many"
  haproxy_many "$work/ha-rules" "$work/ha-backends" 100 10 "$ECHO_PORT"
  HAPROXY_EXTRA="$work/ha-backends" haproxy_config "$work/haproxy-many.cfg" "$H_HTTP" "$H_H2C" "$H_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT" "$work/ha-rules"
  start_haproxy "$work/haproxy-many.cfg"
  declare -A many_pid=([meshwork]=$MW_PID [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID)
  declare -A many_port=([meshwork]=$M_HTTP [nginx]=$N_HTTP [haproxy]=$H_HTTP)
  for t in "${PROXIES[@]}"; do
    wait_http "http://127.0.0.1:${many_port[$t]}/static" || die "$t (1,000 routes) did not start"
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: svc-0099.bench.test' "http://127.0.0.1:${many_port[$t]}/p9")
    [ "$code" = 200 ] || die "$t (1,000 routes): svc-0099.bench.test/p9 answered $code"
  done
  sleep 1
  for t in "${PROXIES[@]}"; do cell e.rss.many "$t" "$(mib "$(rss_kb "${many_pid[$t]}")")"; done
  for t in "${PROXIES[@]}"; do
    out="$work/e.load.$t"
    measured "${many_pid[$t]}" run_rate "$out" 5000 "$CONNS" "$FOOT" \
      "http://127.0.0.1:${many_port[$t]}/p9" -H ':authority: svc-0099.bench.test'
    cell e.rss.load "$t" "$(mib "$(rss_kb "${many_pid[$t]}")")"
    cell e.cpuk.load "$t" "$(cpu_per_k "$(rate_done "$out" "$FOOT")")"
    out="$work/e.base.$t"
    measured "${PID[$t]}" run_rate "$out" 5000 "$CONNS" "$FOOT" "http://127.0.0.1:${HTTP[$t]}/e?size=0"
    cell e.cpuk.base "$t" "$(cpu_per_k "$(rate_done "$out" "$FOOT")")"
  done
  for key in e.rss.many e.rss.load e.cpuk.load e.cpuk.base; do cell "$key" direct "n/a"; done
  stop_pid "${many_pid[meshwork]}"; stop_pid "${many_pid[nginx]}"; stop_pid "${many_pid[haproxy]}"
}

# ---------------------------------------------------------------------------------------
# f. Config scale: 1,000 services / 5,000 routes, loaded, compiled, then one change.

bench_config_scale() {
  local n=$SCALE_SERVICES per=$SCALE_ROUTES routes=$((SCALE_SERVICES * SCALE_ROUTES))
  section f "f. Config scale: $n services, $routes routes"
  row f f.ready "Start to serving: load, validate, compile, bind (s)" \
    "meshwork up DIR (time until /healthz/ready is 200); nginx/haproxy: start until the last route answers"
  row f f.hwm "Peak RSS while loading (MiB)" "grep VmHWM /proc/PID/status (nginx: master + worker)"
  row f f.rss "RSS once serving (MiB)" "grep VmRSS /proc/PID/status"
  row f f.change "Apply one change, until the new route answers (ms)" \
    "rewrite one file (meshwork: watched, 200 ms debounce included) / nginx -s reload; poll curl every 10 ms"
  row f f.hwm2 "Peak RSS after the change (MiB)" "grep VmHWM /proc/PID/status"
  local dir=$work/scale files=10 i s t0 last
  alloc_port S_HTTP; alloc_port S_TLS
  last=$(printf 'svc-%04d' $((n - 1)))
  mw_many_config "$dir" "$S_HTTP" "$S_TLS" "$work" "$ECHO_PORT" "$n" "$per" "$files"
  local yaml_mb
  yaml_mb=$(du -sm "$dir" | cut -f1)
  ROW_LABEL[f.ready]+=" [$yaml_mb MiB of YAML in $((files + 2)) files]"

  s=$(now_ms)
  start_meshwork meshwork-scale "$dir"
  cell f.ready meshwork "$(awk -v ms=$(($(now_ms) - s)) 'BEGIN { printf "%.2f", ms / 1000 }')"
  wait_route "$S_HTTP" "$last.bench.test" "/p$((per - 1))" || die "meshwork (scale) does not serve $last"
  cell f.hwm meshwork "$(mib "$(rss_kb "$MW_PID" VmHWM)")"
  cell f.rss meshwork "$(mib "$(rss_kb "$MW_PID")")"
  # One change: a new route on service 0, in its file (file 0).
  local f0=$dir/many-0.yaml
  {
    mw_many_service 0 "$per" "$ECHO_PORT" /changed
    for ((i = files; i < n; i += files)); do mw_many_service "$i" "$per" "$ECHO_PORT"; done
  } >"$work/many-0.new"
  s=$(now_ms)
  mv "$work/many-0.new" "$f0"
  if wait_route "$S_HTTP" svc-0000.bench.test /changed 3000; then
    cell f.change meshwork "$(($(now_ms) - s))"
  else
    cell f.change meshwork "ERR (not applied in 30 s)"
  fi
  cell f.hwm2 meshwork "$(mib "$(rss_kb "$MW_PID" VmHWM)")"
  stop_pid "$MW_PID"

  # nginx with the same routes: server blocks and prefix locations.
  alloc_port NS_HTTP; alloc_port NS_H2C; alloc_port NS_TLS
  nginx_many "$work/nginx-scale.inc" "$n" "$per" "$ECHO_PORT" "$NS_HTTP"
  NGINX_EXTRA="$work/nginx-scale.inc" nginx_proxy_config "$work/nginx-scale" "$NS_HTTP" "$NS_H2C" "$NS_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  s=$(now_ms)
  start_nginx "$work/nginx-scale"
  wait_route "$NS_HTTP" "$last.bench.test" "/p$((per - 1))" 3000 || die "nginx (scale) does not serve $last"
  cell f.ready nginx "$(awk -v ms=$(($(now_ms) - s)) 'BEGIN { printf "%.2f", ms / 1000 }')"
  cell f.hwm nginx "$(mib "$(rss_kb "$NGINX_PID" VmHWM)")"
  cell f.rss nginx "$(mib "$(rss_kb "$NGINX_PID")")"
  sed -i "0,/location \/p0 /s//location \/changed { proxy_pass http:\/\/svc-0000; }\n    location \/p0 /" "$work/nginx-scale.inc"
  NGINX_EXTRA="$work/nginx-scale.inc" nginx_proxy_config "$work/nginx-scale" "$NS_HTTP" "$NS_H2C" "$NS_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
  s=$(now_ms)
  kill -HUP "$NGINX_PID"
  if wait_route "$NS_HTTP" svc-0000.bench.test /changed 3000; then
    cell f.change nginx "$(($(now_ms) - s))"
  else
    cell f.change nginx "ERR"
  fi
  sleep 0.5
  cell f.hwm2 nginx "$(mib "$(rss_kb "$NGINX_PID" VmHWM)")"
  stop_pid "$NGINX_PID"

  # haproxy with the same routes: host+prefix rules and backends (no reload measured).
  alloc_port HS_HTTP; alloc_port HS_H2C; alloc_port HS_TLS
  haproxy_many "$work/hs-rules" "$work/hs-backends" "$n" "$per" "$ECHO_PORT"
  HAPROXY_EXTRA="$work/hs-backends" haproxy_config "$work/haproxy-scale.cfg" "$HS_HTTP" "$HS_H2C" "$HS_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT" "$work/hs-rules"
  s=$(now_ms)
  start_haproxy "$work/haproxy-scale.cfg"
  wait_route "$HS_HTTP" "$last.bench.test" "/p$((per - 1))" 3000 || die "haproxy (scale) does not serve $last"
  cell f.ready haproxy "$(awk -v ms=$(($(now_ms) - s)) 'BEGIN { printf "%.2f", ms / 1000 }')"
  cell f.hwm haproxy "$(mib "$(rss_kb "$HAPROXY_PID" VmHWM)")"
  cell f.rss haproxy "$(mib "$(rss_kb "$HAPROXY_PID")")"
  cell f.change haproxy "n/a"
  cell f.hwm2 haproxy "n/a"
  stop_pid "$HAPROXY_PID"
  for key in f.ready f.hwm f.rss f.change f.hwm2; do cell "$key" direct "n/a"; done
}

# wait_route PORT HOST PATH [TRIES]: polls every 10 ms until HOST PATH answers 200.
wait_route() {
  local port=$1 host=$2 path=$3 tries=${4:-3000} i
  for ((i = 0; i < tries; i++)); do
    [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' -H "Host: $host" "http://127.0.0.1:$port$path")" = 200 ] && return 0
    sleep 0.01
  done
  return 1
}

# ---------------------------------------------------------------------------------------
# The report.

# ratio A B: A/B to two decimals, when both are numbers.
ratio() {
  local a=${1%% *} b=${2%% *}
  a=${a%%(*} b=${b%%(*}
  if [[ $a =~ ^-?[0-9.]+$ && $b =~ ^-?[0-9.]+$ ]] && awk -v b="$b" 'BEGIN { exit !(b + 0 != 0) }'; then
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
  else
    echo "—"
  fi
}

write_results() {
  local i s key t line
  {
    echo "<!-- results:begin (written by bench/run.sh; edit outside these markers) -->"
    echo "## Results"
    echo
    if $QUICK; then echo "**Smoke run (\`--quick\`): durations too short for conclusions.**"; echo; fi
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $COMMIT; binary: \`$MW\`"
    echo "- Machine: $(nproc) cores ($CPU_MODEL), $MEM_GIB GiB RAM, $(uname -sr)"
    echo "- Pinning: proxy on CPU ${PROXY_CPU:-any}; load generator on CPU ${CLIENT_CPU:-any}; backends on CPU ${BACKEND_CPU:-any}. One worker each: meshwork \`TOKIO_WORKER_THREADS=1\`, nginx \`worker_processes 1\`, haproxy \`nbthread 1\`; the echo backend also runs one worker."
    echo "- Sharing the cores: load average at start $LOAD_BEFORE, at end $(cut -d' ' -f1-3 /proc/loadavg) (the run itself keeps both cores busy: about 2); $(monitor_summary). Busy at start: ${BUSY_BEFORE:-nothing}."
    echo "- Tools: $VERSIONS"
    echo "- Durations: saturation ${SAT}s, fixed rate ${RATE}s, TLS ${TLS}s, HTTP/2 ${H2}s, Istio setting ${ISTIO}s, footprint ${FOOT}s (each after a warm-up)."
    echo "- Backends: \`meshwork echo\` in its fastest mode (\`?size=N\`, no JSON) and, as a control, nginx \`return 200\`. \"direct\" is the load generator straight to the backend: the limit."
    echo "- Ratios are meshwork ÷ nginx and meshwork ÷ direct (for req/s higher is better; for latency, memory and CPU lower is better). \"(N err)\" marks runs with errors or non-2xx answers."
    echo
    for i in "${!SECTIONS[@]}"; do
      s=${SECTIONS[$i]}
      echo "### ${SECTION_TITLE[$i]}"
      echo
      echo "| measurement | meshwork | nginx | haproxy | direct | meshwork ÷ nginx | meshwork ÷ direct |"
      echo "|---|---:|---:|---:|---:|---:|---:|"
      for key in ${SECTION_ROWS[$s]}; do
        line="| ${ROW_LABEL[$key]} "
        for t in "${TARGETS[@]}"; do line+="| ${CELL[$key|$t]:-—} "; done
        line+="| $(ratio "${CELL[$key|meshwork]:-}" "${CELL[$key|nginx]:-}") "
        line+="| $(ratio "${CELL[$key|meshwork]:-}" "${CELL[$key|direct]:-}") |"
        echo "$line"
      done
      echo
      echo "<details><summary>Commands (PORT: the target's port; LOG: a per-request log)</summary>"
      echo
      for key in ${SECTION_ROWS[$s]}; do
        echo "- ${ROW_LABEL[$key]## }: \`${ROW_CMD[$key]}\`"
      done
      echo
      echo "</details>"
      echo
    done
    echo "<!-- results:end -->"
  } >"$work/results.md"
  if [ -f "$OUT" ] && grep -q '<!-- results:begin' "$OUT"; then
    awk -v f="$work/results.md" '
      /<!-- results:begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
      /<!-- results:end/ { skip = 0; next }
      !skip { print }' "$OUT" >"$work/out.md"
    cp "$work/out.md" "$OUT"
  else
    { echo "# Benchmarks"; echo; cat "$work/results.md"; } >"$OUT"
  fi
  log "results written to $OUT"
}

# ---------------------------------------------------------------------------------------

main() {
  local started
  started=$(now_ms)
  ensure_packages
  build_meshwork
  setup_cpus
  machine_info
  start_backends
  start_proxies
  monitor_start
  declare -gA IDLE_RSS=()
  local t
  for t in "${TARGETS[@]}"; do IDLE_RSS[$t]=$(rss_kb "${PID[$t]}"); done
  bench_http1
  bench_metrics_cost
  bench_tls
  bench_h2
  bench_istio
  bench_footprint
  bench_config_scale
  write_results
  log "done in $(( ($(now_ms) - started) / 1000 )) s"
}

main
