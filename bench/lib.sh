# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/profile.sh: processes, ports, pinning, /proc
# readings, load-generator output parsing, and the generated configs of every proxy.
# Sourced, never run. Expects `$work` (a temp dir) to be set by the caller.

# ---------------------------------------------------------------------------------------
# Processes: everything started here is remembered and stopped by `stop_all` (trap).

declare -a BENCH_PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# start_bg NAME CPUSET CMD...: runs CMD in the background, pinned to CPUSET ("" = no pin),
# with its output in $work/NAME.log; sets $LAST_PID.
start_bg() {
  local name=$1 cpus=$2
  shift 2
  if [ -n "$cpus" ]; then
    taskset -c "$cpus" "$@" >"$work/$name.log" 2>&1 &
  else
    "$@" >"$work/$name.log" 2>&1 &
  fi
  LAST_PID=$!
  BENCH_PIDS+=("$LAST_PID")
}

# stop_pid PID: TERM, wait up to 5 s, then KILL. Only for PIDs started by start_bg.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do stop_pid "$pid"; done
  BENCH_PIDS=()
}

# ---------------------------------------------------------------------------------------
# Ports: a benchmark-only range (BENCH_PORT_BASE, default 28100), skipping any port in use.

NEXT_PORT=${BENCH_PORT_BASE:-28100}
port_in_use() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
# alloc_port VAR: the next free port of the range, into VAR.
alloc_port() {
  local _p=$NEXT_PORT
  while port_in_use "$_p"; do _p=$((_p + 1)); done
  NEXT_PORT=$((_p + 1))
  printf -v "$1" '%s' "$_p"
}

# wait_http URL [CODE] [TRIES]: polls every 50 ms until URL answers CODE (200).
wait_http() {
  local url=$1 code=${2:-200} tries=${3:-200} i got
  for i in $(seq 1 "$tries"); do
    got=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" 2>/dev/null || true)
    [ "$got" = "$code" ] && return 0
    sleep 0.05
  done
  return 1
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# monitor_start: every 5 s (for at most an hour), appends to $work/monitor.log the 1-minute
# load average and the processes outside this run's process group that used at least 20%
# of a core since the last sample (from /proc/PID/stat). Load generators run under
# `timeout`, which gives them a group of their own, so they are recognised by name.
monitor_start() {
  local pgid
  pgid=$(($(ps -o pgid= -p $$)))
  (
    if [ -n "${CLIENT_CPU:-}" ]; then taskset -pc "$CLIENT_CPU" "$BASHPID" >/dev/null 2>&1 || true; fi
    proc_ticks >"$work/monitor.prev"
    for _ in $(seq 1 720); do
      sleep 5
      proc_ticks >"$work/monitor.now"
      awk -v pgid="$pgid" -v hz="$CLK_TCK" -v load="$(cut -d' ' -f1 /proc/loadavg)" '
        NR == FNR { prev[$1] = $4; next }
        $1 in prev && $3 != pgid && ($4 - prev[$1]) / hz / 5 >= 0.2 \
          && $2 !~ /^(wrk|h2load|curl|openssl|timeout|valgrind)$/ {
          busy = busy " " $2 "(" int(100 * ($4 - prev[$1]) / hz / 5) "%)"
        }
        END { print load busy }' "$work/monitor.prev" "$work/monitor.now" >>"$work/monitor.log"
      mv "$work/monitor.now" "$work/monitor.prev"
    done
  ) &
  BENCH_PIDS+=($!)
}

# proc_ticks: "pid comm pgid utime+stime" for every process.
proc_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{ # processes may end meanwhile
    i = index($0, "("); j = length($0); while (substr($0, j, 1) != ")") j--
    comm = substr($0, i + 1, j - i - 1); gsub(/ /, "_", comm)
    split(substr($0, j + 2), f, " ")
    print $1, comm, f[3], f[12] + f[13]
  }'
}

# monitor_summary: the highest load average seen, and the other busy processes by name.
monitor_summary() {
  awk '
    { if ($1 > max) max = $1; if (NF > 1) busy++
      for (i = 2; i <= NF; i++) { n = $i; sub(/\(.*/, "", n); seen[n]++ } }
    END {
      printf "highest 1-minute load average during the run %.2f (%d samples every 5 s); ", max, NR
      s = ""; for (n in seen) s = s (s ? ", " : "") n " (" seen[n] ")"
      if (s) printf "other processes used at least 20%% of a core in %d samples: %s", busy, s
      else printf "no other process used 20%% of a core"
    }' "$work/monitor.log" 2>/dev/null
}

# ---------------------------------------------------------------------------------------
# CPU pinning: the proxy gets a core of its own; load generator and backends share the rest.

setup_cpus() {
  local n
  n=$(nproc)
  if [ "$n" -ge 4 ]; then
    PROXY_CPU=1 BACKEND_CPU=2 CLIENT_CPU=3
  elif [ "$n" -ge 2 ]; then
    PROXY_CPU=1 BACKEND_CPU=0 CLIENT_CPU=0
  else
    PROXY_CPU="" BACKEND_CPU="" CLIENT_CPU=""
  fi
}

# client CMD...: runs a load generator pinned to the client core.
client() {
  if [ -n "$CLIENT_CPU" ]; then taskset -c "$CLIENT_CPU" "$@"; else "$@"; fi
}

# ---------------------------------------------------------------------------------------
# /proc readings of a process and its children (nginx runs a master and a worker).

# family PID: PID and its direct children.
family() { echo "$1" $(pgrep -P "$1" 2>/dev/null || true); }

# cpu_ticks PID: utime+stime of PID and its children, in clock ticks.
cpu_ticks() {
  local total=0 p f
  for p in $(family "$1"); do
    f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
    total=$((total + ${f% *} + ${f#* }))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# rss_kb PID [FIELD]: VmRSS (or VmHWM) summed over PID and its children, in KiB.
rss_kb() {
  local field=${2:-VmRSS} total=0 p v
  for p in $(family "$1"); do
    v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------------------
# Load generators and their output.

# wrk_rps FILE: requests/s from wrk's output; "ERR" when wrk saw errors or non-2xx.
wrk_rps() {
  local rps errs
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$1")
  errs=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$1")
  [ -n "$rps" ] || { echo "ERR"; return; }
  if [ "$errs" -gt 0 ]; then echo "${rps%.*} (${errs} err)"; else echo "${rps%.*}"; fi
}

# wrk_requests FILE: the request count of a wrk run.
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }

# h2load_rps FILE: requests/s from h2load's output, with failures noted.
h2load_rps() {
  local rps failed
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$1")
  failed=$(awk '/^requests:/ {gsub(",", ""); print $10 + $12 + $14}' "$1")
  local non2xx
  non2xx=$(awk '/^status codes:/ {gsub(",", ""); print $5 + $7 + $9}' "$1")
  [ -n "$rps" ] || { echo "ERR"; return; }
  local bad=$((${failed:-0} + ${non2xx:-0}))
  if [ "$bad" -gt 0 ]; then echo "${rps%.*} (${bad} err)"; else echo "${rps%.*}"; fi
}

# h2load_done FILE: requests that succeeded (2xx) in an h2load run.
h2load_done() { awk '/^status codes:/ {gsub(",", ""); print $3 + 0}' "$1"; }

# percentiles LOGFILE P...: latency percentiles (ms, 3 decimals) of an h2load --log-file
# (tab-separated: start µs, status, duration µs) into the array PCT. Only 2xx answers
# count; when there were others, each value is marked "(N err)".
percentiles() {
  local file=$1 n bad p v mark=""
  shift
  awk -F'\t' '$2 >= 200 && $2 < 300 {print $3}' "$file" 2>/dev/null | sort -n >"$file.sorted"
  n=$(wc -l <"$file.sorted")
  bad=$(awk -F'\t' '$2 < 200 || $2 >= 300' "$file" 2>/dev/null | wc -l)
  [ "$bad" -gt 0 ] && mark=" ($bad err)"
  PCT=()
  for p in "$@"; do
    if [ "$n" -eq 0 ]; then PCT+=("ERR"); continue; fi
    v=$(sed -n "$(awk -v n="$n" -v p="$p" 'BEGIN { i = int(n * p / 100 + 0.999999); if (i < 1) i = 1; if (i > n) i = n; print i }')p" "$file.sorted")
    PCT+=("$(awk -v v="$v" 'BEGIN { printf "%.3f", v / 1000 }')$mark")
  done
}

# ---------------------------------------------------------------------------------------
# Configs. All proxies: one worker, no access log, keep-alive to the upstream, the same
# routing (gRPC prefix, /static to the nginx control backend, everything else to echo),
# and the same forwarded headers (Host kept, X-Forwarded-For/-Proto, X-Request-Id).

# gen_cert DIR: a self-signed RSA-2048 certificate for bench.test (RSA makes the handshake
# cost sit on the server, which is what the TLS rows measure).
gen_cert() {
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench.test" \
    -addext "subjectAltName=DNS:bench.test,DNS:*.bench.test,IP:127.0.0.1" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  cat "$dir/cert.pem" "$dir/key.pem" >"$dir/combined.pem"
}

indent() { sed "s/^/$1/"; }

# mw_gateway DIR HTTP_PORT TLS_PORT CERTDIR: the gateway Service, Gateway and TLS Secret.
mw_gateway() {
  local dir=$1 http=$2 tls=$3 certs=$4
  cat >"$dir/gateway.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: $http}
  - {name: https, port: 443, targetPort: $tls}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: bench-cert}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-cert, namespace: istio-system}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(indent '    ' <"$certs/cert.pem")
  tls.key: |
$(indent '    ' <"$certs/key.pem")
EOF
}

# mw_service NS NAME PORTNAME PORT: a Service and its WorkloadEntry at 127.0.0.1:PORT.
mw_service() {
  cat <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: $2, namespace: $1}
spec:
  selector: {app: $2}
  ports:
  - {name: $3, port: 80, targetPort: $4}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: $2, namespace: $1}
spec:
  address: 127.0.0.1
  labels: {app: $2}
  ports: {$3: $4}
EOF
}

# mw_base_config DIR HTTP TLS CERTDIR ECHO STATIC: the benchmark config of meshwork.
mw_base_config() {
  local dir=$1 echo=$5 static=$6
  mkdir -p "$dir"
  mw_gateway "$dir" "$2" "$3" "$4"
  {
    mw_service bench echo http "$echo"
    mw_service bench static http "$static"
    mw_service bench grpc grpc-echo "$echo"
    cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [istio-system/bench-gateway]
  http:
  - match: [{uri: {prefix: /bench.Echo/}}]
    route: [{destination: {host: grpc}}]
  - match: [{uri: {prefix: /static}}]
    route: [{destination: {host: static}}]
  - route: [{destination: {host: echo}}]
EOF
  } >"$dir/services.yaml"
}

# mw_many_config DIR HTTP TLS CERTDIR ECHO SERVICES ROUTES_PER_SERVICE FILES: SERVICES
# Services (clusters), each with a VirtualService for svc-N.bench.test holding
# ROUTES_PER_SERVICE prefix routes (/p0, /p1, ...), spread over FILES files; plus the
# catch-all echo route.
mw_many_config() {
  local dir=$1 echo=$5 services=$6 per=$7 files=$8 f i r
  mkdir -p "$dir"
  mw_gateway "$dir" "$2" "$3" "$4"
  { mw_service bench echo http "$echo"; mw_catch_all; } >"$dir/services.yaml"
  for ((f = 0; f < files; f++)); do
    for ((i = f; i < services; i += files)); do
      mw_many_service "$i" "$per" "$echo"
    done >"$dir/many-$f.yaml"
  done
}

mw_catch_all() {
  cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [istio-system/bench-gateway]
  http:
  - route: [{destination: {host: echo}}]
EOF
}

# mw_many_service I ROUTES ECHO [EXTRA_PREFIX]: service svc-I with its VirtualService.
mw_many_service() {
  local i=$1 per=$2 echo=$3 extra=${4:-} r name
  name=$(printf 'svc-%04d' "$i")
  mw_service bench "$name" http "$echo"
  cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: $name, namespace: bench}
spec:
  hosts: [$name.bench.test]
  gateways: [istio-system/bench-gateway]
  http:
EOF
  for ((r = 0; r < per; r++)); do
    echo "  - match: [{uri: {prefix: /p$r}}]"
    echo "    route: [{destination: {host: $name}}]"
  done
  if [ -n "$extra" ]; then
    echo "  - match: [{uri: {prefix: $extra}}]"
    echo "    route: [{destination: {host: $name}}]"
  fi
}

# nginx_common: the http{} preamble shared by both nginx instances.
nginx_common() {
  cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
EOF
}

# nginx_static_config DIR PORT: the control backend, `return 200`.
nginx_static_config() {
  mkdir -p "$1/tmp"
  {
    nginx_common "$1"
    cat <<EOF
  server {
    listen 127.0.0.1:$2 reuseport backlog=4096;
    location / { return 200; }
  }
}
EOF
  } >"$1/nginx.conf"
}

# nginx_proxy_locations: the three routes, each with upstream keep-alive.
nginx_proxy_locations() {
  cat <<'EOF'
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-Id $request_id;
    location /bench.Echo/ { grpc_pass grpc://grpc; grpc_set_header X-Request-Id $request_id; grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }
    location /static { proxy_pass http://static; }
    location / { proxy_pass http://echo; }
EOF
}

# nginx_proxy_config DIR HTTP H2C TLS CERTDIR ECHO STATIC
nginx_proxy_config() {
  local dir=$1
  mkdir -p "$dir/tmp"
  {
    nginx_common "$dir"
    cat <<EOF
  ssl_session_cache shared:SSL:10m;
  ssl_session_tickets on;
  upstream echo { server 127.0.0.1:$6; keepalive 256; }
  upstream static { server 127.0.0.1:$7; keepalive 256; }
  upstream grpc { server 127.0.0.1:$6; keepalive 256; }
  server {
    listen 127.0.0.1:$2 backlog=4096;
    listen 127.0.0.1:$3 http2 backlog=4096;
    listen 127.0.0.1:$4 ssl http2 backlog=4096;
    ssl_certificate $5/cert.pem;
    ssl_certificate_key $5/key.pem;
$(nginx_proxy_locations)
  }
EOF
    [ -n "${NGINX_EXTRA:-}" ] && cat "$NGINX_EXTRA"
    echo "}"
  } >"$dir/nginx.conf"
}

# nginx_many FILE SERVICES ROUTES ECHO PORT: upstreams and server blocks for
# svc-N.bench.test on PORT.
nginx_many() {
  local file=$1 services=$2 per=$3 echo=$4 port=$5 i r name
  {
    echo "  server_names_hash_bucket_size 128;"
    echo "  server_names_hash_max_size 65536;"
    for ((i = 0; i < services; i++)); do
      name=$(printf 'svc-%04d' "$i")
      echo "  upstream $name { server 127.0.0.1:$echo; keepalive 16; }"
      echo "  server {"
      echo "    listen 127.0.0.1:$port;"
      echo "    server_name $name.bench.test;"
      echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$http_host;"
      echo "    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Request-Id \$request_id;"
      for ((r = 0; r < per; r++)); do
        echo "    location /p$r { proxy_pass http://$name; }"
      done
      echo "  }"
    done
  } >"$file"
}

# haproxy_config FILE HTTP H2C TLS CERTDIR ECHO STATIC [RULES_FILE]
haproxy_config() {
  cat >"$1" <<EOF
global
  nbthread 1
  maxconn 8000
  tune.ssl.cachesize 100000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 75s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:$2
  bind 127.0.0.1:$3 proto h2
  bind 127.0.0.1:$4 ssl crt $5/combined.pem alpn h2,http/1.1
  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  unique-id-format %[uuid()]
  unique-id-header X-Request-Id
$(cat "${8:-/dev/null}")
  use_backend grpc if { path_beg /bench.Echo/ }
  use_backend static if { path_beg /static }
  default_backend echo
backend echo
  server echo 127.0.0.1:$6
backend static
  server static 127.0.0.1:$7
backend grpc
  server grpc 127.0.0.1:$6 proto h2
EOF
  [ -n "${HAPROXY_EXTRA:-}" ] && cat "$HAPROXY_EXTRA" >>"$1"
  return 0
}

# haproxy_many RULES BACKENDS SERVICES ROUTES ECHO: rules (host and prefix) and backends.
haproxy_many() {
  local rules=$1 backends=$2 services=$3 per=$4 echo=$5 i r name
  : >"$rules"
  : >"$backends"
  for ((i = 0; i < services; i++)); do
    name=$(printf 'svc-%04d' "$i")
    for ((r = 0; r < per; r++)); do
      echo "  use_backend $name if { hdr(host) -i $name.bench.test } { path_beg /p$r }" >>"$rules"
    done
    printf 'backend %s\n  server s 127.0.0.1:%s\n' "$name" "$echo" >>"$backends"
  done
}

# grpc_frame FILE: one unary gRPC message (5-byte prefix + a 16-byte protobuf string).
grpc_frame() {
  printf '\x00\x00\x00\x00\x10\x0a\x0e%s' "meshwork-bench" >"$1"
}
