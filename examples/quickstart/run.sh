#!/usr/bin/env bash
# The quickstart: three `meshwork echo` backends and `meshwork up` on ./config, on this
# machine, without Kubernetes. It prints curl lines to try, then serves until Ctrl-C.
#   --check   run those curl lines, verify the answers, stop everything, exit 0 or 1.
# MESHWORK=/path/to/meshwork uses that binary instead of building one.
# Ports, from the environment (defaults as in ./config): QUICKSTART_HTTP (8080, the
# gateway), QUICKSTART_API_V1 (9001), QUICKSTART_API_V2 (9003), QUICKSTART_WEB (9002),
# QUICKSTART_ADMIN (15000), QUICKSTART_HEALTH (15021). When a backend or gateway port
# differs from its default, a copy of ./config with those ports is served instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
check=false
[ "${1:-}" = "--check" ] && check=true

http=${QUICKSTART_HTTP:-8080}
v1=${QUICKSTART_API_V1:-9001}
v2=${QUICKSTART_API_V2:-9003}
web=${QUICKSTART_WEB:-9002}
admin=${QUICKSTART_ADMIN:-15000}
health=${QUICKSTART_HEALTH:-15021}

if [ -z "${MESHWORK:-}" ]; then
  echo "building meshwork (release; the first build takes several minutes)..." >&2
  (cd "$root" && cargo build --release -p meshwork)
  MESHWORK="$root/target/release/meshwork"
fi

pids=()
work=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT INT TERM

config="$here/config"
if [ "$http/$v1/$v2/$web" != "8080/9001/9003/9002" ]; then
  work="$(mktemp -d)"
  config="$work/config"
  mkdir "$config"
  for f in "$here"/config/*.yaml; do
    sed -E -e 's/targetPort: 8080\b/targetPort: @HTTP@/' \
      -e 's/\b9001\b/@V1@/' -e 's/\b9003\b/@V2@/' -e 's/\b9002\b/@WEB@/' \
      -e "s/@HTTP@/$http/; s/@V1@/$v1/; s/@V2@/$v2/; s/@WEB@/$web/" \
      "$f" >"$config/$(basename "$f")"
  done
fi

"$MESHWORK" echo --port "$v1" --name api-v1 & pids+=($!)
"$MESHWORK" echo --port "$v2" --name api-v2 & pids+=($!)
"$MESHWORK" echo --port "$web" --name web & pids+=($!)
"$MESHWORK" validate "$config"
"$MESHWORK" up "$config" --admin "127.0.0.1:$admin" --health "127.0.0.1:$health" & up=$!
pids+=("$up")

# Ready within 30 s, or a loud failure: the gateway's own log is above.
ready=false
for _ in $(seq 1 300); do
  if ! kill -0 "$up" 2>/dev/null; then
    echo "FAIL: meshwork up exited before it was ready (its log is above)" >&2
    exit 1
  fi
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$health/healthz/ready")" = 200 ]; then
    ready=true
    break
  fi
  sleep 0.1
done
if ! $ready; then
  echo "FAIL: meshwork up did not become ready in 30 s:" \
    "http://127.0.0.1:$health/healthz/ready answers" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$health/healthz/ready")" >&2
  exit 1
fi
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "FAIL: a backend exited (its port is taken?); see above" >&2; exit 1; }
done

cat <<TRY

meshwork is serving shop.example.test on 127.0.0.1:$http. Try:

  curl -H 'Host: shop.example.test' http://127.0.0.1:$http/web/            # -> web
  curl -H 'Host: shop.example.test' http://127.0.0.1:$http/api/items       # -> api-v1 (90%) or api-v2 (10%)
  curl -H 'Host: shop.example.test' -H 'x-version: v2' http://127.0.0.1:$http/api/items   # -> api-v2
  curl -i -H 'Host: shop.example.test' http://127.0.0.1:$http/nothing      # -> 404
  curl http://127.0.0.1:$admin/config_dump                                 # what the gateway runs

Edit a file in $config and the change applies at once.
TRY

if ! $check; then
  wait
  exit 0
fi

base="http://127.0.0.1:$http"
name() { curl -s -D - -o /dev/null "$@" | tr -d '\r' | sed -n 's/^x-echo-name: //p'; }
fail=0
expect() { if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: got '$2', want '$3'"; fail=1; fi; }
expect "/web goes to web" "$(name -H 'Host: shop.example.test' "$base/web/")" web
expect "x-version: v2 goes to api-v2" "$(name -H 'Host: shop.example.test' -H 'x-version: v2' "$base/api/items")" api-v2
expect "unknown paths get 404" "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: shop.example.test' "$base/nothing")" 404
v2_count=$(curl -s -D - -o /dev/null -H 'Host: shop.example.test' "$base/api/items?n=[1-200]" | grep -c 'x-echo-name: api-v2' || true)
if [ "$v2_count" -ge 4 ] && [ "$v2_count" -le 40 ]; then echo "ok   canary: $v2_count of 200 to api-v2"; else echo "FAIL canary: $v2_count of 200 to api-v2"; fail=1; fi
exit $fail
