#!/usr/bin/env bash
# bench/compare.sh: pipeline-gateway against HAProxy, nginx and a direct connection (issue 5).
#
# One command: installs what is missing (wrk, nginx, haproxy from the distribution), builds
# the release binary, makes keys and tokens, then measures the same workloads through
#   direct    client -> upstream (the ceiling)
#   nginx     bare proxy_pass, no auth (what a bare C proxy costs)
#   haproxy   the gateway's job with HAProxy's own features (jwt_verify RS256, exp/iss/aud/role
#             checks, pipeline-name and `initial` ACLs, stick-table rate limit by principal)
#   gateway   pipeline-gateway, full config (JWT RS256 + API keys, rate limits, validation)
# The upstream is a static nginx answering activate's 202 body.
#
# Workloads (all POST /v0/pipelines/bench-orders/activate):
#   a  ?initial=running, one hot JWT
#   b  ?initial=running, 10,000 distinct JWTs in turn, gateway token cache off
#   c  ?initial=running, a Feldera API key
#   d  ?initial=paused, hot JWT, 1 KiB JSON body
#   t  workload a over TLS, keep-alive: every proxy terminates TLS (nginx `ssl`, HAProxy
#      `ssl crt`, the gateway's [server.tls]) with the same ECDSA P-256 certificate and key
#   h  workload a over TLS with `Connection: close`: a new connection and handshake per
#      request (handshake-bound); its req/s are handshakes per second
#   (t and h skip `direct`, whose static upstream has no TLS, and skip the gateway with a
#   message when its check-config refuses [server.tls].)
#
#   a2 workload a on two cores: gateway --workers 2 against nginx worker_processes 2
#
# Fairness: the system under test runs on CPU $SUT_CPU with one worker (nginx
# worker_processes 1, haproxy nbthread 1, gateway --workers 1); wrk (1 thread) and
# the upstream share CPU $LOAD_CPU. In the two-core run (a2) it runs on CPUs $SUT2_CPUS with
# two workers, and wrk (2 threads) and the upstream on $LOAD2_CPUS (a third core; on a
# two-CPU machine they are left unpinned and share the two cores, which the report says).
# Every run starts the system fresh, warms it up, then measures; systems alternate within
# each round (A B C D, A B C D, ...). Access logs are off everywhere. CPU per request is the
# system's utime+stime (/proc/PID/stat) over the run divided by its requests. Memory: the
# three scenarios of bench/rss.py (idle keep-alive clients, requests in flight at a slow
# upstream, after they left) for the gateway and nginx. With --callgrind, instructions per
# request of workload (a) under valgrind (bench/callgrind.sh) for the gateway and nginx.
# Results: bench/results/latest.{json,md,svg} (see bench/README.md).
#
# Usage: bench/compare.sh [--quick] [--rounds N] [--duration S] [--warmup S]
#                         [--connections C] [--workloads a,b,c,d,t,h]
#                         [--systems direct,nginx,haproxy,gateway] [--tokens N]
#                         [--rss-connections N] [--rss-settle S] [--no-rss] [--no-two-core]
#                         [--callgrind] [--no-build] [--strict] [--note TEXT]
# Environment:
#   BENCH_GATEWAY_AUTH=off        run the gateway with [auth] mode = "off" (harness validation
#                                 on a build without the auth work; ratios are then invalid)
#   BENCH_GATEWAY_RATE_LIMIT=on|off   include [rate_limit] (default: on, off when auth is off)
#   BENCH_TOKEN_CACHE_OFF='token_cache_size = 0'   the [auth] line that turns the cache off (b)
#   BENCH_GATEWAY_BIN=PATH        use this binary, do not build
#   BENCH_BASE_PORT=18080         upstream, nginx, haproxy, gateway on this port and the next 3
#   BENCH_SUT_CPU=0 BENCH_LOAD_CPU=1
#   BENCH_SUT2_CPUS=0,1 BENCH_LOAD2_CPUS=2   the two-core run (default load CPUs: 2- when the
#                                 machine has 3 or more, else unpinned)
# Exit status: 0 done (targets may have failed; they are printed), 1 on any error, 3 when
# --strict and a target failed.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
RESULTS=$BENCH_DIR/results
TMP_ROOT=$RESULTS/tmp
KEYS=$TMP_ROOT/keys
WORK=$TMP_ROOT/run

ISSUER="https://idp.bench.local/"
AUDIENCE="feldera-api"
PIPELINE="bench-orders"

# ---------------------------------------------------------------------------------------
# Options

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

QUICK=0 ROUNDS="" DURATION="" WARMUP="" CONNECTIONS=64 WORKLOADS="" NTOKENS=10000
SYSTEMS="direct,nginx,haproxy,gateway" RSS_CONNECTIONS=1000 RSS_SETTLE="" RSS=1
TWO_CORE=1 CALLGRIND=0 BUILD=1 STRICT=0 NOTE=""
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --connections) CONNECTIONS=$2; shift ;;
        --workloads) WORKLOADS=$2; shift ;;
        --systems) SYSTEMS=$2; shift ;;
        --tokens) NTOKENS=$2; shift ;;
        --rss-connections) RSS_CONNECTIONS=$2; shift ;;
        --rss-settle) RSS_SETTLE=$2; shift ;;
        --no-rss) RSS=0 ;;
        --no-two-core) TWO_CORE=0 ;;
        --callgrind) CALLGRIND=1 ;;
        --no-build) BUILD=0 ;;
        --strict) STRICT=1 ;;
        --note) NOTE=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'unknown option: %s (see --help)\n' "$1" >&2; exit 1 ;;
    esac
    shift
done
if ((QUICK)); then
    # About a minute once the binary is built: one round of workload (a) on one core and on
    # two, short runs, and the memory scenarios with short pauses.
    : "${ROUNDS:=1}" "${DURATION:=5}" "${WARMUP:=1}" "${WORKLOADS:=a}" "${RSS_SETTLE:=1}"
else
    : "${ROUNDS:=3}" "${DURATION:=10}" "${WARMUP:=2}" "${WORKLOADS:=a,b,c,d}" "${RSS_SETTLE:=3}"
fi
# The two-core run (a2) compares the gateway with nginx only.
if ((TWO_CORE)) && [[ ",$SYSTEMS," == *,gateway,* || ",$SYSTEMS," == *,nginx,* ]] &&
    [[ ",$WORKLOADS," != *,a2,* ]]; then
    WORKLOADS+=",a2"
fi
IFS=, read -r -a WORKLOAD_LIST <<<"$WORKLOADS"
IFS=, read -r -a SYSTEM_LIST <<<"$SYSTEMS"

SUT_CPU=${BENCH_SUT_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
SUT2_CPUS=${BENCH_SUT2_CPUS:-0,1}
if [[ -n ${BENCH_LOAD2_CPUS+set} ]]; then
    LOAD2_CPUS=$BENCH_LOAD2_CPUS
elif (($(nproc) >= 3)); then
    LOAD2_CPUS=2-$(($(nproc) - 1))
else
    LOAD2_CPUS=""
fi
BASE_PORT=${BENCH_BASE_PORT:-18080}
UPSTREAM_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
HAPROXY_PORT=$((BASE_PORT + 2))
GATEWAY_PORT=$((BASE_PORT + 3))
# The memory scenarios' slow upstream (bench/rss.py listens there).
RSS_UPSTREAM_PORT=$((BASE_PORT + 4))
GATEWAY_AUTH=${BENCH_GATEWAY_AUTH:-on}
if [[ $GATEWAY_AUTH == off ]]; then
    # With auth off every request is the same anonymous principal: a per-principal limit has
    # nothing to key on, and a build without the auth work has no rate-limit keys either.
    GATEWAY_RATE_LIMIT=${BENCH_GATEWAY_RATE_LIMIT:-off}
else
    GATEWAY_RATE_LIMIT=${BENCH_GATEWAY_RATE_LIMIT:-on}
fi
TOKEN_CACHE_OFF=${BENCH_TOKEN_CACHE_OFF:-token_cache_size = 0}

log() { printf '%s\n' "$*"; }
die() {
    printf '\nerror: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit 1
}

for w in "${WORKLOAD_LIST[@]}"; do
    [[ $w =~ ^(a|b|c|d|t|h|a2)$ ]] || die "unknown workload '$w' (a, b, c, d, t, h, a2)"
done
for s in "${SYSTEM_LIST[@]}"; do
    [[ $s =~ ^(direct|nginx|haproxy|gateway)$ ]] || die "unknown system '$s' (direct, nginx, haproxy, gateway)"
done
for n in "$ROUNDS" "$DURATION" "$WARMUP" "$CONNECTIONS" "$NTOKENS" "$RSS_CONNECTIONS" "$RSS_SETTLE"; do
    [[ $n =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n'"
done
((ROUNDS >= 1 && DURATION >= 1)) || die "--rounds and --duration must be at least 1"
has_system() { [[ ",$SYSTEMS," == *",$1,"* ]]; }
has_workload() { [[ ",$WORKLOADS," == *",$1,"* ]]; }
# Workloads t and h: the job of workload a over TLS.
is_tls_workload() { [[ $1 == t || $1 == h ]]; }
has_tls_workload() { has_workload t || has_workload h; }

# ---------------------------------------------------------------------------------------
# Processes started here, stopped on any exit (by their own PIDs only).

PIDS=()
stop_pid() {
    local pid=$1 i state
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)
        [[ $state == Z || $state == gone ]] && break
        sleep 0.1
    done
    [[ $state == Z || $state == gone ]] || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
    local pid=$1 kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# ---------------------------------------------------------------------------------------
# Tools

as_root() { if ((EUID == 0)); then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

find_cmd() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" 2>/dev/null; }

ensure_tools() {
    local -A package=([wrk]=wrk [nginx]=nginx [haproxy]=haproxy [openssl]=openssl
        [taskset]=util-linux [curl]=curl [python3]=python3)
    local missing=() cmd
    for cmd in wrk nginx haproxy openssl taskset curl python3; do
        find_cmd "$cmd" >/dev/null || missing+=("${package[$cmd]}")
    done
    if ((${#missing[@]})); then
        log "installing from the distribution: ${missing[*]}"
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
        if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
            as_root apt-get update
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" ||
                die "could not install ${missing[*]}"
        fi
    fi
    WRK=$(find_cmd wrk) NGINX=$(find_cmd nginx) HAPROXY=$(find_cmd haproxy)
    local hv
    hv=$("$HAPROXY" -v | sed -n 's/^HAProxy version \([0-9]*\.[0-9]*\).*/\1/p' | head -1)
    [[ -n $hv ]] && awk -v v="$hv" 'BEGIN { split(v, p, "."); exit !(p[1] > 2 || (p[1] == 2 && p[2] >= 5)) }' ||
        die "HAProxy $hv has no jwt_verify (2.5 or later needed; the issue measures 2.6)"
    local cpus
    cpus=$(nproc)
    ((cpus > SUT_CPU && cpus > LOAD_CPU && SUT_CPU != LOAD_CPU)) ||
        die "need two distinct CPUs (BENCH_SUT_CPU=$SUT_CPU, BENCH_LOAD_CPU=$LOAD_CPU, $cpus CPUs here)"
    ulimit -n 65536 2>/dev/null || true
    (($(ulimit -n) >= 3 * RSS_CONNECTIONS + 1000)) ||
        die "open-file limit $(ulimit -n) is too low for $RSS_CONNECTIONS connections (ulimit -n)"
}

# python3 that can import `cryptography` (to sign RS256 tokens): the system one, else a venv
# under bench/results/tmp/venv.
ensure_python() {
    if python3 -c 'import cryptography' 2>/dev/null; then
        PY=python3
        return
    fi
    PY=$TMP_ROOT/venv/bin/python
    if ! "$PY" -c 'import cryptography' 2>/dev/null; then
        log "creating $TMP_ROOT/venv with cryptography (to sign the bench's JWTs)"
        python3 -m venv "$TMP_ROOT/venv" ||
            die "python3 -m venv failed" "install python3-venv (apt-get install -y python3-venv)"
        "$TMP_ROOT/venv/bin/pip" install --quiet cryptography || die "pip install cryptography failed"
    fi
}

build_gateway() {
    if [[ -n ${BENCH_GATEWAY_BIN:-} ]]; then
        GATEWAY_BIN=$BENCH_GATEWAY_BIN
    else
        local target=${CARGO_TARGET_DIR:-$REPO/target}
        [[ $target == /* ]] || target=$REPO/$target
        GATEWAY_BIN=$target/release/pipeline-gateway
        if ((BUILD)); then
            log "building the release binary (cargo build --release) ..."
            (cd "$REPO" && cargo build --release --bin pipeline-gateway) ||
                die "cargo build --release failed"
        fi
    fi
    [[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN"
}

# ---------------------------------------------------------------------------------------
# Keys, tokens, bodies, configuration files

make_credentials() {
    mkdir -p "$KEYS"
    if [[ ! -f $KEYS/key.pem ]]; then
        (umask 077 && openssl genrsa -out "$KEYS/key.pem" 2048 2>/dev/null) || die "openssl genrsa failed"
    fi
    local many=0
    has_workload b && many=$NTOKENS
    "$PY" "$BENCH_DIR/lib/keys.py" --dir "$KEYS" --issuer "$ISSUER" --audience "$AUDIENCE" \
        --many "$many" || die "could not make keys and tokens ($BENCH_DIR/lib/keys.py)"
    HOT_TOKEN=$(<"$KEYS/token-hot.txt")
    API_KEY=$(<"$KEYS/apikey.txt")
    APIKEY_SHA256=$(<"$KEYS/apikey.sha256")
    # 1 KiB JSON body for workload d.
    python3 -c 'import sys; sys.stdout.write("{\"pad\":\"" + "x" * (1024 - 10) + "\"}")' >"$WORK/body-1k.json"
}

render() { # template output
    sed -e "s|@WORK@|$WORK|g" -e "s|@KEYS@|$KEYS|g" \
        -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
        -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" -e "s|@GATEWAY_PORT@|$GATEWAY_PORT|g" \
        -e "s|@ISSUER@|$ISSUER|g" -e "s|@AUDIENCE@|$AUDIENCE|g" \
        -e "s|@APIKEY_SHA256@|${APIKEY_SHA256:-}|g" \
        -e "s|@TOKEN_CACHE_OFF@|$TOKEN_CACHE_OFF|g" "$1" >"$2"
}

# gateway.toml -> gateway-cache.toml (workloads a, c, d) and gateway-nocache.toml (b).
gateway_config() { # output cache|nocache
    local out=$1 cache=$2 tmp=$WORK/gateway.rendered
    render "$BENCH_DIR/gateway.toml" "$tmp"
    [[ $cache == cache ]] && sed -i '/^# >>> token-cache-off/,/^# <<< token-cache-off/d' "$tmp"
    if [[ $GATEWAY_AUTH == off ]]; then
        sed -i -e '/^# >>> auth/,/^# <<< auth/c\[auth]\nmode = "off"' "$tmp"
    fi
    [[ $GATEWAY_RATE_LIMIT == off ]] && sed -i '/^# >>> rate_limit/,/^# <<< rate_limit/d' "$tmp"
    mv "$tmp" "$out"
    local problems
    if ! problems=$("$GATEWAY_BIN" check-config --config "$out" 2>&1); then
        die "pipeline-gateway refuses the bench configuration $out:" \
            "" "${problems//$'\n'/$'\n'  }" "" \
            "The bench config uses [[auth.jwt]] (issuer, audiences, algorithms, jwks_file," \
            "role_claim), [[auth.api_keys]] (name, sha256, role), '$TOKEN_CACHE_OFF' and" \
            "[rate_limit] principal/anonymous: keys from the auth and rate-limit work." \
            "On a build without them, validate the harness with:" \
            "  BENCH_GATEWAY_AUTH=off bench/compare.sh --quick" \
            "A different cache key: BENCH_TOKEN_CACHE_OFF='token_cache = false' (see bench/README.md)."
    fi
}

# One ECDSA P-256 certificate and key for every proxy's TLS listener (workloads t and h),
# made fresh for each run in the run's temp dir. HAProxy wants both in one PEM file.
make_tls_certificate() {
    TLS_DIR=$WORK/tls
    mkdir -p "$TLS_DIR"
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" -days 2 -subj "/CN=bench.local" \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>"$TLS_DIR/openssl.log") ||
        die "openssl could not make the bench certificate:" "$(cat "$TLS_DIR/openssl.log")"
    cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"
}

# The TLS variants of the three proxies' configurations: the same job, the listener with TLS.
# GATEWAY_TLS=0 when the gateway's check-config refuses [server.tls] (a build without the
# TLS listener): the gateway is then skipped for t and h, with a message.
make_tls_configs() {
    sed -e "s|^\( *listen 127.0.0.1:$NGINX_PORT\) backlog=4096;|\1 ssl backlog=4096;\n        ssl_certificate $TLS_DIR/cert.pem;\n        ssl_certificate_key $TLS_DIR/key.pem;|" \
        "$WORK/proxy.nginx.conf" >"$WORK/proxy-tls.nginx.conf"
    grep -q "listen 127.0.0.1:$NGINX_PORT ssl" "$WORK/proxy-tls.nginx.conf" ||
        die "could not put ssl on the listen line of $WORK/proxy.nginx.conf"
    sed -e "s|^\( *bind 127.0.0.1:$HAPROXY_PORT\)\$|\1 ssl crt $TLS_DIR/haproxy.pem|" \
        "$WORK/haproxy.cfg" >"$WORK/haproxy-tls.cfg"
    grep -q "bind 127.0.0.1:$HAPROXY_PORT ssl crt" "$WORK/haproxy-tls.cfg" ||
        die "could not put ssl crt on the bind line of $WORK/haproxy.cfg"
    local out
    if has_system nginx; then
        out=$("$NGINX" -t -q -c "$WORK/proxy-tls.nginx.conf" -p "$WORK" 2>&1) || die "nginx refuses the TLS proxy config:" "$out"
    fi
    if has_system haproxy; then
        out=$("$HAPROXY" -c -q -f "$WORK/haproxy-tls.cfg" 2>&1) || die "haproxy refuses its TLS config:" "$out"
    fi
    GATEWAY_TLS=0
    if has_system gateway; then
        { cat "$WORK/gateway-cache.toml"
          printf '\n# Workloads t and h: TLS on the client listener (the same certificate as nginx and HAProxy).\n'
          printf '[server.tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem"
        } >"$WORK/gateway-tls.toml"
        if out=$("$GATEWAY_BIN" check-config --config "$WORK/gateway-tls.toml" 2>&1); then
            GATEWAY_TLS=1
        else
            log "NOTE: this gateway build refuses [server.tls] (no TLS listener yet): the gateway is skipped for TLS workloads (t, h)."
            log "      check-config said: $(head -n 3 <<<"$out" | tr '\n' ' ')"
        fi
    fi
    return 0
}

make_configs() {
    mkdir -p "$WORK/nginx-tmp"
    render "$BENCH_DIR/conf/upstream.nginx.conf" "$WORK/upstream.nginx.conf"
    render "$BENCH_DIR/conf/proxy.nginx.conf" "$WORK/proxy.nginx.conf"
    render "$BENCH_DIR/conf/haproxy.cfg" "$WORK/haproxy.cfg"
    local out
    out=$("$NGINX" -t -q -c "$WORK/upstream.nginx.conf" -p "$WORK" 2>&1) || die "nginx refuses the upstream config:" "$out"
    # nginx with two workers (the two-core run), and pointed at bench/rss.py's slow upstream.
    sed 's/^worker_processes 1;/worker_processes 2;/' "$WORK/proxy.nginx.conf" >"$WORK/proxy2.nginx.conf"
    sed "s/127.0.0.1:$UPSTREAM_PORT;/127.0.0.1:$RSS_UPSTREAM_PORT;/" "$WORK/proxy.nginx.conf" >"$WORK/proxy-rss.nginx.conf"
    if has_system nginx; then
        out=$("$NGINX" -t -q -c "$WORK/proxy.nginx.conf" -p "$WORK" 2>&1) || die "nginx refuses the proxy config:" "$out"
    fi
    if has_system haproxy; then
        out=$("$HAPROXY" -c -q -f "$WORK/haproxy.cfg" 2>&1) || die "haproxy refuses its config:" "$out"
    fi
    if has_system gateway; then
        gateway_config "$WORK/gateway-cache.toml" cache
        has_workload b && gateway_config "$WORK/gateway-nocache.toml" nocache
        sed "s|127.0.0.1:$UPSTREAM_PORT\"|127.0.0.1:$RSS_UPSTREAM_PORT\"|" "$WORK/gateway-cache.toml" >"$WORK/gateway-rss.toml"
    fi
    if has_tls_workload; then
        make_tls_certificate
        make_tls_configs
    fi
    return 0
}

# ---------------------------------------------------------------------------------------
# Starting and stopping

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port pid log
    local i
    for ((i = 0; i < 100; i++)); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "process $2 exited before listening on $1; its log ($3):" "$(tail -n 20 "$3" 2>/dev/null)"
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 10 s; log ($3):" "$(tail -n 20 "$3" 2>/dev/null)"
}

start_upstream() {
    taskset -c "$LOAD_CPU" "$NGINX" -c "$WORK/upstream.nginx.conf" -p "$WORK" \
        >"$WORK/upstream.out.log" 2>&1 &
    PIDS+=($!)
    wait_port "$UPSTREAM_PORT" $! "$WORK/upstream.error.log"
}

# Starts the system under test for a workload on $SUT_CPU; sets SUT_PID, SUT_URL, SUT_LOG.
start_system() { # system workload [rss]
    local system=$1 workload=$2 rss=${3:-} port cpus=$SUT_CPU workers=1 nginx_conf=$WORK/proxy.nginx.conf
    SUT_PID="" SUT_LOG=$WORK/$system.log
    if [[ $workload == a2 ]]; then
        cpus=$SUT2_CPUS workers=2 nginx_conf=$WORK/proxy2.nginx.conf
    fi
    [[ -n $rss ]] && nginx_conf=$WORK/proxy-rss.nginx.conf
    case $system in
        direct) port=$UPSTREAM_PORT ;;
        nginx) port=$NGINX_PORT ;;
        haproxy) port=$HAPROXY_PORT ;;
        gateway) port=$GATEWAY_PORT ;;
    esac
    if [[ $system != direct ]] && port_open "$port"; then
        die "port $port is taken by another program (set BENCH_BASE_PORT)"
    fi
    local tls="" scheme=http
    if is_tls_workload "$workload"; then tls=-tls scheme=https; fi
    case $system in
        nginx)
            [[ -n $tls ]] && nginx_conf=$WORK/proxy$tls.nginx.conf
            taskset -c "$cpus" "$NGINX" -c "$nginx_conf" -p "$WORK" >"$SUT_LOG" 2>&1 &
            SUT_PID=$! ;;
        haproxy)
            taskset -c "$SUT_CPU" "$HAPROXY" -db -f "$WORK/haproxy$tls.cfg" >"$SUT_LOG" 2>&1 &
            SUT_PID=$! ;;
        gateway)
            local config=$WORK/gateway-cache.toml
            [[ $workload == b ]] && config=$WORK/gateway-nocache.toml
            [[ -n $tls ]] && config=$WORK/gateway-tls.toml
            [[ -n $rss ]] && config=$WORK/gateway-rss.toml
            # One worker per core, like nginx's worker_processes and haproxy's nbthread:
            # --workers N runs N single-threaded runtimes, each on its own listener.
            RUST_LOG=warn taskset -c "$cpus" \
                "$GATEWAY_BIN" --workers "$workers" run --config "$config" >"$SUT_LOG" 2>&1 &
            SUT_PID=$! ;;
    esac
    if [[ -n $SUT_PID ]]; then
        PIDS+=("$SUT_PID")
        wait_port "$port" "$SUT_PID" "$SUT_LOG"
    fi
    SUT_URL="$scheme://127.0.0.1:$port$(workload_path "$workload")"
}

stop_system() {
    [[ -n $SUT_PID ]] || return 0
    stop_pid "$SUT_PID"
    forget_pid "$SUT_PID"
    SUT_PID=""
}

# ---------------------------------------------------------------------------------------
# Workloads

workload_path() {
    case $1 in
        d) printf '/v0/pipelines/%s/activate?initial=paused' "$PIPELINE" ;;
        *) printf '/v0/pipelines/%s/activate?initial=running' "$PIPELINE" ;;
    esac
}

# Runs wrk for one workload against SUT_URL; prints wrk's output.
run_wrk() { # workload connections seconds
    local env=(BENCH_METHOD=POST BENCH_BODY_FILE= BENCH_TOKEN= BENCH_TOKENS_FILE=)
    case $1 in
        a) env+=("BENCH_TOKEN=$HOT_TOKEN") ;;
        b) env+=("BENCH_TOKENS_FILE=$KEYS/tokens-many.txt") ;;
        c) env+=("BENCH_TOKEN=$API_KEY") ;;
        d) env+=("BENCH_TOKEN=$HOT_TOKEN" "BENCH_BODY_FILE=$WORK/body-1k.json") ;;
        t) env+=("BENCH_TOKEN=$HOT_TOKEN") ;;
        # A new connection, so a full TLS handshake, for every request.
        h) env+=("BENCH_TOKEN=$HOT_TOKEN" "BENCH_CLOSE=1") ;;
        a2) env+=("BENCH_TOKEN=$HOT_TOKEN") ;;
    esac
    local pin=(taskset -c "$LOAD_CPU") threads=1
    if [[ $1 == a2 ]]; then
        threads=2 pin=()
        [[ -n $LOAD2_CPUS ]] && pin=(taskset -c "$LOAD2_CPUS")
    fi
    env "${env[@]}" "${pin[@]}" "$WRK" -t"$threads" -c"$2" -d"$3s" --timeout 10s \
        -s "$BENCH_DIR/wrk/workload.lua" "$SUT_URL"
}

# One request of the workload with curl, expecting 202; and for systems that authenticate,
# a request without a credential and one with a forged token, expecting 401: a fast 401 must
# never be measured as a fast proxy.
smoke_check() { # system workload
    local system=$1 workload=$2 token=$HOT_TOKEN body=() code tls=()
    # TLS workloads: the certificate is verified against itself (name 127.0.0.1).
    is_tls_workload "$workload" && tls=(--cacert "$TLS_DIR/cert.pem")
    [[ $workload == b ]] && token=$(head -n 1 "$KEYS/tokens-many.txt")
    [[ $workload == c ]] && token=$API_KEY
    [[ $workload == d ]] && body=(-H 'Content-Type: application/json' --data-binary "@$WORK/body-1k.json")
    code=$(curl -s "${tls[@]}" -o "$WORK/smoke.body" -w '%{http_code}' -X POST "${body[@]}" \
        -H "Authorization: Bearer $token" "$SUT_URL") || code="(no answer)"
    [[ $code == 202 ]] || die "$system, workload $workload: expected 202 from $SUT_URL, got $code:" \
        "$(head -c 400 "$WORK/smoke.body" 2>/dev/null)" "log ($SUT_LOG):" "$(tail -n 10 "$SUT_LOG")"
    if [[ $system == haproxy || ($system == gateway && $GATEWAY_AUTH != off) ]]; then
        code=$(curl -s "${tls[@]}" -o /dev/null -w '%{http_code}' -X POST "$SUT_URL")
        [[ $code == 401 ]] || die "$system accepts a request without a credential ($code): auth is not on"
        # Change a signature character well before the end (the last one carries padding bits).
        local forged=${HOT_TOKEN:0:-20}A${HOT_TOKEN: -19}
        [[ $forged == "$HOT_TOKEN" ]] && forged=${HOT_TOKEN:0:-20}B${HOT_TOKEN: -19}
        code=$(curl -s "${tls[@]}" -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $forged" "$SUT_URL")
        [[ $code == 401 ]] || die "$system accepts a forged JWT ($code): signatures are not checked"
    fi
}

# utime+stime (clock ticks) of a process and its children, read from /proc/PID/stat.
tree_pids() { printf '%s\n' "$1"; pgrep -P "$1" || true; }
cpu_ticks() {
    local pid total=0 fields
    for pid in $(tree_pids "$1"); do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        # After "pid (comm) ": state is field 1, utime field 12, stime field 13.
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    printf '%s\n' "$total"
}
# Peak resident set (VmHWM, kB) of a process and its children, summed.
peak_rss_kb() {
    local pid total=0 kb
    for pid in $(tree_pids "$1"); do
        kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${kb:-0}))
    done
    printf '%s\n' "$total"
}
# Busy and total ticks of the system-under-test CPUs (a list like 0,1 or 2-3), from /proc/stat.
cpu0_ticks() { # [cpus]
    local list=${1:-$SUT_CPU} cpus=() part parts
    IFS=, read -r -a parts <<<"$list"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then cpus+=($(seq "${part%-*}" "${part#*-}")); else cpus+=("$part"); fi
    done
    awk -v want=" ${cpus[*]} " '$1 ~ /^cpu[0-9]+$/ && index(want, " " substr($1, 4) " ") {
        for (i = 2; i <= 9; i++) total += $i; idle += $5 + $6 }
        END { print total - idle, total }' /proc/stat
}

measure() { # round workload system
    local round=$1 workload=$2 system=$3 out json before=null after rss=null busy0 total0 busy1 total1
    start_system "$system" "$workload"
    smoke_check "$system" "$workload"
    if ((WARMUP > 0)); then run_wrk "$workload" "$CONNECTIONS" "$WARMUP" >/dev/null; fi
    [[ -n $SUT_PID ]] && before=$(cpu_ticks "$SUT_PID")
    local sut_cpus=$SUT_CPU
    [[ $workload == a2 ]] && sut_cpus=$SUT2_CPUS
    read -r busy0 total0 < <(cpu0_ticks "$sut_cpus")
    out=$(run_wrk "$workload" "$CONNECTIONS" "$DURATION") || die "wrk failed against $system:" "$out"
    read -r busy1 total1 < <(cpu0_ticks "$sut_cpus")
    if [[ -n $SUT_PID ]]; then
        after=$(cpu_ticks "$SUT_PID")
        rss=$(peak_rss_kb "$SUT_PID")
        kill -0 "$SUT_PID" 2>/dev/null || die "$system died during the run; log ($SUT_LOG):" "$(tail -n 20 "$SUT_LOG")"
    fi
    stop_system
    json=$(sed -n 's/^WRKJSON //p' <<<"$out")
    [[ -n $json ]] || die "no WRKJSON line from wrk against $system:" "$out"
    local ticks=null
    [[ $before != null ]] && ticks=$((after - before))
    printf '{"round":%d,"workload":"%s","system":"%s","cpu_ticks":%s,"clk_tck":%d,"rss_kb":%s,"cpu0_busy_ticks":%d,"cpu0_total_ticks":%d,"wrk":%s}\n' \
        "$round" "$workload" "$system" "$ticks" "$CLK_TCK" "$rss" \
        "$((busy1 - busy0))" "$((total1 - total0))" "$json" >>"$WORK/runs.jsonl"
    python3 - "$json" "$system" "$workload" "$round" <<'EOF'
import json, sys
w = json.loads(sys.argv[1])
rps = w["requests"] / (w["duration_us"] / 1e6)
errors = sum(w["errors"].values())
lat = w["latency_us"]
print(f"  round {sys.argv[4]}  ({sys.argv[3]}) {sys.argv[2]:<8} {rps:>10,.0f} req/s  "
      f"p99 {lat['p99'] / 1000:.2f} ms  errors {errors}")
EOF
}

# Resident memory of the gateway and of nginx in bench/rss.py's three scenarios (idle
# keep-alive clients, requests in flight at a slow upstream, after they left), one core each.
measure_rss() {
    local system pid pids out entries=()
    for system in gateway nginx; do
        has_system "$system" || continue
        start_system "$system" a rss
        # nginx: the master and its worker.
        pids=()
        for pid in $(tree_pids "$SUT_PID"); do pids+=(--pid "$pid"); done
        log "  memory, $system ($RSS_CONNECTIONS clients):"
        out=$(taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/rss.py" "${pids[@]}" \
            --gateway "127.0.0.1:$(sut_port "$system")" --upstream-port "$RSS_UPSTREAM_PORT" \
            --connections "$RSS_CONNECTIONS" --settle "$RSS_SETTLE" \
            --header "authorization: Bearer $HOT_TOKEN" --json "$WORK/rss-$system.json") ||
            die "bench/rss.py failed against $system:" "$out" "log ($SUT_LOG):" "$(tail -n 10 "$SUT_LOG")"
        log "$out"
        stop_system
        entries+=("\"$system\": $(<"$WORK/rss-$system.json")")
    done
    local IFS=,
    printf '{%s}\n' "${entries[*]}" >"$WORK/rss.json"
}

sut_port() {
    case $1 in
        direct) echo "$UPSTREAM_PORT" ;;
        nginx) echo "$NGINX_PORT" ;;
        haproxy) echo "$HAPROXY_PORT" ;;
        gateway) echo "$GATEWAY_PORT" ;;
    esac
}

# Instructions per request of workload (a) under callgrind, for the gateway and nginx (one
# process each: nginx without its master).
measure_callgrind() {
    local entries=() header="authorization: Bearer $HOT_TOKEN" line
    command -v valgrind >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind ||
        die "valgrind is missing (apt-get install -y valgrind)"
    if has_system gateway; then
        line=$(RUST_LOG=warn "$BENCH_DIR/callgrind.sh" --port "$GATEWAY_PORT" --out "$WORK/callgrind" \
            --name gateway --header "$header" -- \
            "$GATEWAY_BIN" --workers 1 run --config "$WORK/gateway-cache.toml") ||
            die "callgrind of the gateway failed" "$line"
        log "  $line"
        entries+=("\"gateway\": $(sed 's/.*request: \([0-9,]*\).*/\1/; s/,//g' <<<"$line")")
        # The same without the software SHA-256 valgrind runs instead of SHA-NI (callgrind.sh).
        if [[ $line == *"SHA-256: "* ]]; then
            entries+=("\"gateway without valgrind's software SHA-256\": $(sed 's/.*SHA-256: \([0-9,]*\).*/\1/; s/,//g' <<<"$line")")
        fi
    fi
    if has_system nginx; then
        sed 's/^daemon off;/daemon off;\nmaster_process off;/' "$WORK/proxy.nginx.conf" >"$WORK/proxy-single.nginx.conf"
        line=$("$BENCH_DIR/callgrind.sh" --port "$NGINX_PORT" --out "$WORK/callgrind" \
            --name nginx --header "$header" -- \
            "$NGINX" -c "$WORK/proxy-single.nginx.conf" -p "$WORK") ||
            die "callgrind of nginx failed" "$line"
        log "  $line"
        entries+=("\"nginx\": $(sed 's/.*request: \([0-9,]*\).*/\1/; s/,//g' <<<"$line")")
    fi
    local IFS=,
    printf '{%s}\n' "${entries[*]}" >"$WORK/callgrind.json"
}

write_meta() {
    local commit
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || commit+="+dirty"
    M_MODE=$( ((QUICK)) && echo quick || echo full) M_NOTE=$NOTE M_COMMIT=$commit \
    M_STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ) M_HOST=$(hostname) M_CPUS=$(nproc) \
    M_LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg) M_ROUNDS=$ROUNDS M_DURATION=$DURATION \
    M_WARMUP=$WARMUP M_CONNECTIONS=$CONNECTIONS M_WORKLOADS=$WORKLOADS M_SYSTEMS=$SYSTEMS \
    M_SUT_CPU=$SUT_CPU M_LOAD_CPU=$LOAD_CPU M_SUT2_CPUS=$SUT2_CPUS M_LOAD2_CPUS=${LOAD2_CPUS:-unpinned} M_AUTH=$GATEWAY_AUTH M_RATE_LIMIT=$GATEWAY_RATE_LIMIT \
    M_TOKEN_CACHE_OFF=$TOKEN_CACHE_OFF M_TOKENS=$NTOKENS \
    M_VERSIONS="$("$NGINX" -v 2>&1 | head -1); $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3); $("$WRK" -v 2>&1 | head -1 | cut -d' ' -f1-2); $("$GATEWAY_BIN" --version)" \
        python3 - "$WORK/meta.json" <<'EOF'
import json, os, sys
e = os.environ
meta = {
    "mode": e["M_MODE"], "note": e["M_NOTE"], "started": e["M_STARTED"],
    "commit": e["M_COMMIT"], "host": e["M_HOST"], "cpus": int(e["M_CPUS"]),
    "loadavg": e["M_LOADAVG"], "rounds": int(e["M_ROUNDS"]),
    "duration": int(e["M_DURATION"]), "warmup": int(e["M_WARMUP"]),
    "connections": int(e["M_CONNECTIONS"]),
    "workloads": e["M_WORKLOADS"].split(","), "systems": e["M_SYSTEMS"].split(","),
    "sut_cpu": int(e["M_SUT_CPU"]), "load_cpu": int(e["M_LOAD_CPU"]),
    "sut2_cpus": e["M_SUT2_CPUS"], "load2_cpus": e["M_LOAD2_CPUS"],
    "gateway_auth_on": e["M_AUTH"] != "off",
    "gateway_rate_limit_on": e["M_RATE_LIMIT"] != "off",
    "token_cache_off": e["M_TOKEN_CACHE_OFF"], "distinct_tokens": int(e["M_TOKENS"]),
    "versions": e["M_VERSIONS"],
}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(meta, out, indent=1)
EOF
}

# ---------------------------------------------------------------------------------------
# Main

main() {
    local started=$SECONDS
    ensure_tools
    ensure_python
    build_gateway
    rm -rf "$WORK"
    mkdir -p "$WORK"
    CLK_TCK=$(getconf CLK_TCK)
    make_credentials
    make_configs
    write_meta
    : >"$WORK/runs.jsonl"

    local per_run=$((WARMUP + DURATION + 1))
    local total=$((ROUNDS * ${#WORKLOAD_LIST[@]} * ${#SYSTEM_LIST[@]} * per_run))
    log "bench: ${SYSTEM_LIST[*]} x workloads ${WORKLOAD_LIST[*]} x $ROUNDS round(s), ${DURATION}s each" \
        "(+${WARMUP}s warm-up), $CONNECTIONS connections; about ${total}s"
    log "gateway: $GATEWAY_BIN (auth $GATEWAY_AUTH, rate limits $GATEWAY_RATE_LIMIT)"
    [[ $GATEWAY_AUTH == off ]] && log "NOTE: gateway auth is OFF: the gateway does less work than HAProxy; ratios only validate the harness."

    start_upstream
    local round workload system
    for ((round = 1; round <= ROUNDS; round++)); do
        for workload in "${WORKLOAD_LIST[@]}"; do
            for system in "${SYSTEM_LIST[@]}"; do
                if is_tls_workload "$workload"; then
                    if [[ $system == direct ]]; then
                        ((round == 1)) && log "  ($workload) direct: skipped (the static upstream has no TLS)"
                        continue
                    fi
                    if [[ $system == gateway ]] && ((!GATEWAY_TLS)); then
                        ((round == 1)) && log "  ($workload) gateway: skipped (this build refuses [server.tls], see above)"
                        continue
                    fi
                fi
                # The two-core run compares the gateway with nginx only.
                [[ $workload == a2 && $system != gateway && $system != nginx ]] && continue
                measure "$round" "$workload" "$system"
            done
        done
    done
    if ((RSS)); then measure_rss; fi
    if ((CALLGRIND)); then measure_callgrind; fi
    cleanup

    local stamp status=0
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    log ""
    python3 "$BENCH_DIR/lib/report.py" --run-dir "$WORK" --out "$RESULTS" --stamp "$stamp" || status=$?
    ((status <= 1)) || die "report.py failed"
    log ""
    log "results: $RESULTS/latest.md, latest.svg, latest.json (and $stamp.json); took $((SECONDS - started))s"
    if ((STRICT && status == 1)); then exit 3; fi
}

main
