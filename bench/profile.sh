#!/usr/bin/env bash
# Profiles the gateway's hot path: HTTP/1.1 keep-alive requests through `meshwork up`
# (the benchmark config, one worker) to `meshwork echo ?size=0`, under a bounded load.
#
#   bench/profile.sh [perf|callgrind] [OUTDIR]
#
#   perf        perf record -e cpu-clock (software clock: works without hardware counters)
#               during a 10 s wrk run at saturation; flat profile by symbol, with and
#               without children (DWARF call graphs).
#   callgrind   valgrind --tool=callgrind over 20,000 requests (h2load, 16 connections),
#               for meshwork and, as a reference, nginx with the benchmark's config:
#               instructions and mallocs per request, top functions (self and inclusive),
#               and the callers of the costliest library functions.
#   OUTDIR      where reports go (default: a temp dir, printed at the end).
#   MESHWORK_BIN=/path   the binary to profile (default: build it, as bench/run.sh does).
# The release profile keeps line tables (`debug = "line-tables-only"`), enough for symbols.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
tool=${1:-perf}
outdir=${2:-$(mktemp -d /tmp/meshwork-profile.XXXXXX)}
mkdir -p "$outdir"
work=$(mktemp -d /tmp/meshwork-profile-work.XXXXXX)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

if [ -z "${MESHWORK_BIN:-}" ]; then
  (cd "$root" && cargo build --release -q -p meshwork)
  MESHWORK_BIN="${CARGO_TARGET_DIR:-$root/target}/release/meshwork"
fi
MW=$MESHWORK_BIN
setup_cpus

alloc_port ECHO_PORT; alloc_port STATIC_PORT; alloc_port HTTP; alloc_port TLSPORT
alloc_port ADMIN; alloc_port HEALTH
TOKIO_WORKER_THREADS=1 start_bg echo "$BACKEND_CPU" "$MW" echo --port "$ECHO_PORT" --name echo
gen_cert "$work"
mw_base_config "$work/mw" "$HTTP" "$TLSPORT" "$work" "$ECHO_PORT" "$STATIC_PORT"
url="http://127.0.0.1:$HTTP/e?size=0"

REQUESTS=20000

# callgrind_one NAME URL CMD...: runs CMD under callgrind on the proxy core, warms it up,
# zeroes the counters, sends REQUESTS requests (h2load, 16 connections), and dumps
# $outdir/callgrind.NAME.out.1.
callgrind_one() {
  local name=$1 url=$2 pid i
  shift 2
  start_bg "cg-$name" "$PROXY_CPU" valgrind --tool=callgrind \
    --callgrind-out-file="$outdir/callgrind.$name.out" --compress-strings=no --compress-pos=no "$@"
  pid=$LAST_PID
  for i in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] && break
    sleep 0.1
  done
  client timeout 120 h2load --h1 -t1 -c16 -n 1000 "$url" >/dev/null
  callgrind_control --zero "$pid" >/dev/null
  client timeout 900 h2load --h1 -t1 -c16 -n "$REQUESTS" "$url" >"$outdir/h2load.$name.txt"
  callgrind_control --dump=measured "$pid" >/dev/null
  sleep 1
  stop_pid "$pid"
}

# callgrind_top FILE: "self% inclusive% function" for every function of a callgrind file
# (uncompressed names), by self cost.
callgrind_top() {
  awk '
    /^summary:/ { total = $2 }
    /^fn=/ { fn = substr($0, 4); next }
    /^calls=/ { incall = 1; next }
    /^[0-9+*-]/ { if (incall) { callee[fn] += $2; incall = 0 } else { self[fn] += $2 }; next }
    END {
      for (f in self) printf "%6.2f%% %6.2f%% %s\n", 100 * self[f] / total, 100 * (self[f] + callee[f]) / total, f
      for (f in callee) if (!(f in self)) printf "%6.2f%% %6.2f%% %s\n", 0, 100 * callee[f] / total, f
    }' "$1" | sort -rn
}

# callgrind_callers FILE FUNCTION: who calls FUNCTION, by inclusive cost of those calls.
callgrind_callers() {
  awk -v want="$2" '
    /^summary:/ { total = $2 }
    /^fn=/ { fn = substr($0, 4); next }
    /^cfn=/ { cfn = substr($0, 5); next }
    /^calls=/ { incall = 1; next }
    /^[0-9+*-]/ { if (incall) { if (cfn == want) cost[fn] += $2; incall = 0 }; next }
    END { for (f in cost) printf "%6.2f%% %s\n", 100 * cost[f] / total, f }' "$1" | sort -rn
}

# callgrind_summary FILE NAME: instructions and heap calls per request.
callgrind_summary() {
  awk -v name="$2" -v n="$REQUESTS" '
    /^summary:/ { total = $2 }
    /^cfn=/ { cfn = substr($0, 5) }
    # glibc malloc (C code, and Rust without a global allocator) and the mimalloc entry
    # points (the #[global_allocator] of the gateway).
    /^calls=/ { split($0, a, "[= ]")
      if (cfn == "malloc" || cfn == "mi_malloc_aligned" || cfn == "mi_zalloc_aligned" || cfn == "mi_malloc" || cfn == "calloc") m += a[2]
      if (cfn == "realloc" || cfn == "mi_realloc_aligned" || cfn == "mi_realloc") r += a[2] }
    END { printf "%s: %.0f instructions, %.1f allocations, %.1f reallocations per request\n", name, total / n, m / n, r / n }' "$1"
}

case "$tool" in
  perf)
    TOKIO_WORKER_THREADS=1 start_bg meshwork "$PROXY_CPU" "$MW" up "$work/mw" \
      --admin "127.0.0.1:$ADMIN" --health "127.0.0.1:$HEALTH"
    mw_pid=$LAST_PID
    wait_http "http://127.0.0.1:$HEALTH/healthz/ready" || die "meshwork did not start"
    client timeout 30 wrk -t1 -c64 -d2s "$url" >/dev/null
    # Flat profile: no call graph, cheap, exact attribution of self time.
    client timeout 60 wrk -t1 -c64 -d12s "$url" >"$outdir/wrk-flat.txt" &
    wrk_pid=$!
    sleep 1
    timeout 30 perf record -e cpu-clock -F 1999 -p "$mw_pid" -o "$work/flat.data" -- sleep 10 2>/dev/null
    wait "$wrk_pid" || true
    perf report -i "$work/flat.data" --stdio --no-children --sort symbol --percent-limit 0.3 \
      2>/dev/null | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ +/ /g' >"$outdir/perf-self.txt"
    perf report -i "$work/flat.data" --stdio --no-children --sort dso \
      2>/dev/null | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ +/ /g' >"$outdir/perf-dso.txt"
    # With DWARF call graphs: inclusive cost of our own functions.
    client timeout 60 wrk -t1 -c64 -d8s "$url" >"$outdir/wrk-graph.txt" &
    wrk_pid=$!
    sleep 1
    timeout 60 perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$mw_pid" \
      -o "$work/graph.data" -- sleep 5 2>/dev/null
    wait "$wrk_pid" || true
    perf report -i "$work/graph.data" --stdio --children --sort symbol --percent-limit 2 \
      -g none 2>/dev/null | grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//; s/ +/ /g' >"$outdir/perf-children.txt"
    head -30 "$outdir/perf-self.txt"
    ;;
  callgrind)
    # meshwork, then nginx with the benchmark's nginx config (one process, master off) as a
    # reference: instructions and allocations per request, then the top functions.
    TOKIO_WORKER_THREADS=1 callgrind_one meshwork "http://127.0.0.1:$HTTP/e?size=0" \
      "$MW" up "$work/mw" --admin "127.0.0.1:$ADMIN" --health "127.0.0.1:$HEALTH"
    alloc_port NG_HTTP; alloc_port NG_H2C; alloc_port NG_TLS
    nginx_proxy_config "$work/nginx" "$NG_HTTP" "$NG_H2C" "$NG_TLS" "$work" "$ECHO_PORT" "$STATIC_PORT"
    sed -i 's/^daemon off;/daemon off;\nmaster_process off;/' "$work/nginx/nginx.conf"
    callgrind_one nginx "http://127.0.0.1:$NG_HTTP/e?size=0" \
      nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log"
    {
      for name in meshwork nginx; do
        callgrind_summary "$outdir/callgrind.$name.out.1" "$name"
      done
      echo
      echo "meshwork, top functions by self cost (self%, inclusive%, function):"
      callgrind_top "$outdir/callgrind.meshwork.out.1" | head -40
      echo
      echo "meshwork, inclusive cost of its own functions:"
      callgrind_top "$outdir/callgrind.meshwork.out.1" | sort -k2 -rn | grep -E ' meshwork_' | head -20
      for callee in 'core::fmt::write' 'alloc::fmt::format::format_inner' \
        'http::header::map::HeaderMap<T>::remove' '<alloc::vec::Vec<T,A> as core::clone::Clone>::clone' \
        'core::hash::BuildHasher::hash_one' '__rustc::__rdl_alloc'; do
        echo
        echo "callers of $callee (inclusive % of all instructions):"
        callgrind_callers "$outdir/callgrind.meshwork.out.1" "$callee" | head -6
      done
    } >"$outdir/callgrind-report.txt"
    cat "$outdir/callgrind-report.txt" | head -20
    ;;
  *) die "unknown tool: $tool (perf or callgrind)" ;;
esac
log "reports in $outdir"
ls "$outdir"
