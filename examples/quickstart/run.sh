#!/usr/bin/env bash
# The quickstart: three `meshwork echo` backends and `meshwork up` on ./config, on this
# machine, without Kubernetes. It prints curl lines to try, then serves until Ctrl-C.
#   --check   run those curl lines, verify the answers, stop everything, exit 0 or 1.
# MESHWORK=/path/to/meshwork uses that binary instead of building one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
check=false
[ "${1:-}" = "--check" ] && check=true

if [ -z "${MESHWORK:-}" ]; then
  (cd "$root" && cargo build --release -q -p meshwork)
  MESHWORK="$root/target/release/meshwork"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$MESHWORK" echo --port 9001 --name api-v1 & pids+=($!)
"$MESHWORK" echo --port 9003 --name api-v2 & pids+=($!)
"$MESHWORK" echo --port 9002 --name web & pids+=($!)
"$MESHWORK" validate "$here/config"
"$MESHWORK" up "$here/config" & pids+=($!)

for _ in $(seq 1 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:15021/healthz/ready)" = 200 ] && break
  sleep 0.05
done

cat <<'TRY'

meshwork is serving shop.example.test on 127.0.0.1:8080. Try:

  curl -H 'Host: shop.example.test' http://127.0.0.1:8080/web/            # -> web
  curl -H 'Host: shop.example.test' http://127.0.0.1:8080/api/items       # -> api-v1 (90%) or api-v2 (10%)
  curl -H 'Host: shop.example.test' -H 'x-version: v2' http://127.0.0.1:8080/api/items   # -> api-v2
  curl -i -H 'Host: shop.example.test' http://127.0.0.1:8080/nothing      # -> 404
  curl http://127.0.0.1:15000/config_dump                                 # what the gateway runs

Edit a file in examples/quickstart/config and the change applies at once.
TRY

if ! $check; then
  wait
  exit 0
fi

name() { curl -s -D - -o /dev/null "$@" | tr -d '\r' | sed -n 's/^x-echo-name: //p'; }
fail=0
expect() { if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: got '$2', want '$3'"; fail=1; fi; }
expect "/web goes to web" "$(name -H 'Host: shop.example.test' http://127.0.0.1:8080/web/)" web
expect "x-version: v2 goes to api-v2" "$(name -H 'Host: shop.example.test' -H 'x-version: v2' http://127.0.0.1:8080/api/items)" api-v2
expect "unknown paths get 404" "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: shop.example.test' http://127.0.0.1:8080/nothing)" 404
v2=$(curl -s -D - -o /dev/null -H 'Host: shop.example.test' "http://127.0.0.1:8080/api/items?n=[1-200]" | grep -c 'x-echo-name: api-v2' || true)
if [ "$v2" -ge 4 ] && [ "$v2" -le 40 ]; then echo "ok   canary: $v2 of 200 to api-v2"; else echo "FAIL canary: $v2 of 200 to api-v2"; fail=1; fi
exit $fail
