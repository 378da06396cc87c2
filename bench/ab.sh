#!/usr/bin/env bash
# Two meshwork binaries side by side: HTTP/1.1 keep-alive saturation through `meshwork
# up` (the benchmark config, one worker, pinned as bench/run.sh pins) to `meshwork echo
# ?size=0`, run in alternation (A, B, A, B, ...) so that a host that slows down or
# speeds up during the run weighs on both alike.
#
#   bench/ab.sh BIN_A BIN_B [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# Prints each run's req/s and proxy CPU-ms per 1,000 requests, then the sums of B over A.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
a_bin=${1:?usage: bench/ab.sh BIN_A BIN_B [ROUNDS] [SECONDS]}
b_bin=${2:?usage: bench/ab.sh BIN_A BIN_B [ROUNDS] [SECONDS]}
rounds=${3:-3}
seconds=${4:-10}
work=$(mktemp -d /tmp/meshwork-ab.XXXXXX)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
command -v wrk >/dev/null || die "wrk is not installed (bench/run.sh installs it)"
setup_cpus

alloc_port ECHO_PORT; alloc_port STATIC_PORT; alloc_port HTTP; alloc_port TLSPORT
TOKIO_WORKER_THREADS=1 start_bg echo "$BACKEND_CPU" "$a_bin" echo --port "$ECHO_PORT" --name echo
gen_cert "$work"
mw_base_config "$work/mw" "$HTTP" "$TLSPORT" "$work" "$ECHO_PORT" "$STATIC_PORT"
url="http://127.0.0.1:$HTTP/e?size=0"

# one LABEL BIN: starts the gateway, warms it up, saturates it, prints "req/s cpu-ms".
one() {
  local label=$1 bin=$2 pid before after requests
  alloc_port ADMIN; alloc_port HEALTH
  TOKIO_WORKER_THREADS=1 start_bg "gw-$label" "$PROXY_CPU" "$bin" up "$work/mw" \
    --admin "127.0.0.1:$ADMIN" --health "127.0.0.1:$HEALTH"
  pid=$LAST_PID
  wait_http "$url" || die "the $label gateway did not answer"
  client wrk -t1 -c64 -d2s "$url" >/dev/null
  before=$(cpu_ticks "$pid")
  client wrk -t1 -c64 -d"${seconds}s" "$url" >"$work/wrk.txt"
  after=$(cpu_ticks "$pid")
  stop_pid "$pid"
  requests=$(wrk_requests "$work/wrk.txt")
  awk -v r="$requests" -v s="$seconds" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.0f %.4f\n", r / s, 1000 * (t / hz) * 1000 / r }'
}

sum_a_rps=0; sum_b_rps=0; sum_a_cpu=0; sum_b_cpu=0
printf '%-6s %-2s %10s %22s\n' round bin 'req/s' 'CPU-ms per 1,000 req'
for round in $(seq 1 "$rounds"); do
  read -r a_rps a_cpu < <(one a "$a_bin")
  read -r b_rps b_cpu < <(one b "$b_bin")
  printf '%-6s %-2s %10s %22s\n' "$round" A "$a_rps" "$a_cpu" "$round" B "$b_rps" "$b_cpu"
  sum_a_rps=$(awk -v x="$sum_a_rps" -v y="$a_rps" 'BEGIN { print x + y }')
  sum_b_rps=$(awk -v x="$sum_b_rps" -v y="$b_rps" 'BEGIN { print x + y }')
  sum_a_cpu=$(awk -v x="$sum_a_cpu" -v y="$a_cpu" 'BEGIN { print x + y }')
  sum_b_cpu=$(awk -v x="$sum_b_cpu" -v y="$b_cpu" 'BEGIN { print x + y }')
done
awk -v ar="$sum_a_rps" -v br="$sum_b_rps" -v ac="$sum_a_cpu" -v bc="$sum_b_cpu" \
  'BEGIN { printf "B / A: req/s %.3f, CPU per request %.3f\n", br / ar, bc / ac }'
