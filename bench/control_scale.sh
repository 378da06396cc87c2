#!/usr/bin/env bash
# The control plane at scale: N simulated proxies (one connection and stream each, from one
# load process: crates/control/examples/xds_load.rs) against a config of 1,000 services,
# every proxy importing all of them (a namespace-wide Sidecar with egress hosts ./*).
# For each N it measures the time from a VirtualService change to each proxy's ACK of the
# new route tables (p50, p99, last) and the control plane's RSS per connected proxy.
# Targets (issue #10): p99 under 1 s at 1,000 proxies; under 0.5 MB per proxy (istiod,
# as published: about 1.3-2 MB per proxy).
#
#   bench/control_scale.sh [--proxies "100 1000 5000"] [--services 1000] [--out FILE]
#
# The table goes to stdout and, with --out, into FILE.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
PROXIES="100 1000 5000"
SERVICES=1000
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --proxies) PROXIES=$2; shift ;;
    --services) SERVICES=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

work=$(mktemp -d /tmp/meshwork-control-scale.XXXXXX)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building meshwork and the load generator (release)"
(cd "$root" && cargo build --release -p meshwork --bin meshwork && cargo build --release -p meshwork-control --example xds_load)
bin="$root/target/release/meshwork"
load="$root/target/release/examples/xds_load"
ulimit -n 20000 || true

rows=()
for n in $PROXIES; do
  config="$work/config-$n"
  "$load" write-config "$config" "$SERVICES"
  alloc_port cp
  MESHWORK_LOG=error start_bg "control-$n" "" "$bin" control --config "$config" --listen "127.0.0.1:$cp"
  control_pid=$LAST_PID
  for _ in $(seq 1 100); do
    ss -Htln "sport = :$cp" | grep -q . && break
    sleep 0.1
  done
  log "$n proxies, $SERVICES services"
  result=$("$load" run "127.0.0.1:$cp" "$n" "$config" "$control_pid")
  log "$result"
  rows+=("$(python3 - "$result" "$SERVICES" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print("| {p:,} | {s} | {i:.1f} s | {p50:.0f} ms | {p99:.0f} ms | {last:.0f} ms | {b:.0f} MiB | {a:.0f} MiB | {per:.0f} KiB |".format(
    p=r["proxies"], s=sys.argv[2], i=r["initial_sync_s"], p50=r["change_p50_ms"], p99=r["change_p99_ms"],
    last=r["change_last_ms"], b=r["rss_before_kb"] / 1024, a=r["rss_after_kb"] / 1024, per=r["kb_per_proxy"]))
PY
)")
  stop_pid "$control_pid"
done

table=$(
  echo "| proxies | services | all synced after connecting | change to ACK p50 | p99 | last | control RSS idle | with the proxies | per proxy |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
)
echo "$table"
if [ -n "$OUT" ]; then
  {
    echo
    echo "### g. Control plane scale ($(date -u +%Y-%m-%d), commit $(cd "$root" && git rev-parse --short HEAD))"
    echo
    echo "bench/control_scale.sh: simulated proxies from one process on this machine (2 cores), each importing all $SERVICES services. Targets: p99 under 1 s at 1,000 proxies; under 0.5 MB per proxy (istiod: about 1.3-2 MB)."
    echo
    echo "$table"
  } >>"$OUT"
fi
