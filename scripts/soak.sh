#!/usr/bin/env bash
# Soak test (issue 13 §6), not part of `cargo test`: the gateway in front of a stand-in manager
# for SOAK_SECONDS (default 600) under mixed good, bad and abusive traffic (scripts/soak_traffic.py),
# with the stand-in killed and restarted every RESTART_EVERY seconds (default 45). It asserts:
#   - no lost response: every request of the good and bad mixes gets an answer;
#   - no untyped response: every answer is 2xx/3xx or a JSON error {"message","error_code","details"};
#   - flat memory: the gateway's RSS at the end is within 20 % (or 16 MiB) of its RSS after
#     the first minute (warm-up: pools, caches, allocator arenas).
# Abusive clients (idle, slowloris, readers of nothing, HTTP/2 rapid reset, connect-and-drop)
# are expected to be cut off; their outcomes are counted, not judged.
#
# Usage: scripts/soak.sh            (builds the debug binary first)
#        SOAK_SECONDS=120 scripts/soak.sh
# Run it under `nice` on a shared machine. Prints a summary line per minute and a final report.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${SOAK_SECONDS:-600}"
restart_every="${RESTART_EVERY:-45}"

cargo build --quiet --bin pipeline-gateway
bin="${CARGO_TARGET_DIR:-target}/debug/pipeline-gateway"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "${standin_pid:-}" ] && kill "$standin_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw_port="$(free_port)"; admin_port="$(free_port)"; up_port="$(free_port)"

cat >"$work/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
idle_timeout = "2s"
write_idle_timeout = "2s"
header_read_timeout = "3s"
body_idle_timeout = "2s"
max_connections = 400

[admin]
listen = "127.0.0.1:$admin_port"

[[upstreams]]
name = "manager"
endpoints = ["http://127.0.0.1:$up_port"]
connect_timeout = "500ms"
request_timeout = "5s"

[[routes]]
pipelines = ["*"]
upstream = "manager"
default = true

[auth]
mode = "off"
TOML

start_standin() {
  "$bin" stand-in --listen "127.0.0.1:$up_port" --seed orders --seed billing --seed live:running \
    --lifecycle-delay 20ms >>"$work/standin.log" 2>&1 &
  standin_pid=$!
}

start_standin
RUST_LOG=warn "$bin" run --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$admin_port/livez" >/dev/null 2>&1 && break
  sleep 0.1
done

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$gw_pid/status"; }
echo "soak: ${seconds}s, gateway pid $gw_pid on :$gw_port, stand-in restarted every ${restart_every}s"
echo "rss_start_kib $(rss_kib)"

python3 scripts/soak_traffic.py --gateway "127.0.0.1:$gw_port" --seconds "$seconds" \
  --report "$work/report.json" &
traffic_pid=$!
pids+=("$traffic_pid")

started=$SECONDS
next_restart=$((started + restart_every))
rss_warm=""
restarts=0
samples=()
while kill -0 "$traffic_pid" 2>/dev/null; do
  sleep 5
  kill -0 "$gw_pid" 2>/dev/null || { echo "FAIL: the gateway died"; tail -n 50 "$work/gateway.log"; exit 1; }
  rss="$(rss_kib)"
  samples+=("$rss")
  elapsed=$((SECONDS - started))
  if [ -z "$rss_warm" ] && [ "$elapsed" -ge 60 ]; then rss_warm="$rss"; echo "rss_warm_kib $rss_warm"; fi
  if [ "$SECONDS" -ge "$next_restart" ]; then
    kill "$standin_pid" 2>/dev/null || true
    wait "$standin_pid" 2>/dev/null || true
    sleep 1
    start_standin
    restarts=$((restarts + 1))
    next_restart=$((SECONDS + restart_every))
  fi
  if [ $((elapsed % 60)) -lt 5 ]; then echo "t=${elapsed}s rss_kib=$rss restarts=$restarts"; fi
done
wait "$traffic_pid" || { echo "FAIL: the traffic generator reported lost or untyped responses"; cat "$work/report.json"; exit 1; }
rss_end="$(rss_kib)"
rss_warm="${rss_warm:-${samples[0]}}"
echo "rss_end_kib $rss_end (warm $rss_warm, samples ${#samples[@]}, stand-in restarts $restarts)"
cat "$work/report.json"
curl -fsS "http://127.0.0.1:$admin_port/metrics" | grep -E '^pipeline_gateway_client_connections' || true
limit=$(( rss_warm * 12 / 10 ))
[ "$limit" -lt $((rss_warm + 16384)) ] && limit=$((rss_warm + 16384))
if [ "$rss_end" -gt "$limit" ]; then
  echo "FAIL: RSS grew from $rss_warm KiB to $rss_end KiB"
  exit 1
fi
echo "PASS: no lost or untyped response, RSS flat ($rss_warm -> $rss_end KiB)"
