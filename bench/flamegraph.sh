#!/usr/bin/env bash
# bench/flamegraph.sh: a flame graph of the gateway under workload (a) (one hot JWT,
# activate), made with `perf` and inferno.
#
# Uses what the last bench/compare.sh run left in bench/results/tmp/ (the keys, the hot token,
# the generated gateway and upstream configs), so run compare.sh once first (--quick is
# enough). Starts the static upstream and the gateway (one worker, pinned to CPU 0), drives
# it with wrk on CPU 1 for the warm-up plus DURATION seconds, records the gateway with
# `perf record -e cpu-clock --call-graph dwarf` for DURATION seconds, and writes the SVG.
#
# Usage: bench/flamegraph.sh --out bench/results/flamegraph-a-NAME.svg [--bin PATH]
#                            [--duration 5] [--warmup 2]
# Needs: perf (linux-perf), inferno (`cargo install inferno`), wrk, nginx.

set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
WORK=$BENCH_DIR/results/tmp/run
KEYS=$BENCH_DIR/results/tmp/keys
OUT="" BIN=$REPO/target/release/pipeline-gateway DURATION=5 WARMUP=2
while (($#)); do
    case $1 in
        --out) OUT=$2; shift ;;
        --bin) BIN=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
    shift
done
[[ -n $OUT ]] || { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 1; }
for cmd in perf inferno-collapse-perf inferno-flamegraph wrk nginx taskset; do
    command -v "$cmd" >/dev/null || { echo "$cmd is missing (see the usage)" >&2; exit 1; }
done
for file in "$WORK/gateway-cache.toml" "$WORK/upstream.nginx.conf" "$KEYS/token-hot.txt"; do
    [[ -f $file ]] || { echo "$file is missing: run bench/compare.sh --quick first" >&2; exit 1; }
done
port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$WORK/gateway-cache.toml" | head -1)
pipeline=bench-orders

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

taskset -c 1 nginx -c "$WORK/upstream.nginx.conf" -p "$WORK" &
pids+=($!)
RUST_LOG=warn taskset -c 0 "$BIN" --workers 1 run --config "$WORK/gateway-cache.toml" \
    >"$WORK/flamegraph-gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
for ((i = 0; i < 100; i++)); do port_open "$port" && break; sleep 0.1; done
port_open "$port" || { echo "the gateway did not start (see $WORK/flamegraph-gateway.log)" >&2; exit 1; }

BENCH_TOKEN=$(cat "$KEYS/token-hot.txt") BENCH_METHOD=POST taskset -c 1 \
    wrk -t1 -c64 -d"$((WARMUP + DURATION + 1))s" -s "$BENCH_DIR/wrk/workload.lua" \
    "http://127.0.0.1:$port/v0/pipelines/$pipeline/activate?initial=running" >"$WORK/flamegraph-wrk.log" &
pids+=($!)
sleep "$WARMUP"
perf record -e cpu-clock -F 2999 --call-graph dwarf,16384 -p "$gateway" -o "$WORK/perf.data" \
    -- sleep "$DURATION" 2>"$WORK/perf-record.log"
folded=$WORK/$(basename "$OUT" .svg).folded
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$folded"
# Frames narrower than a pixel are left out: the SVG stays a few hundred KB.
inferno-flamegraph --minwidth 1 --title "pipeline-gateway, workload (a), one core" \
    <"$folded" >"$OUT"
echo "wrote $OUT ($(wc -l <"$folded") stacks; folded stacks in $folded)"
# Shares of the samples, as in bench/results/issue12.md.
python3 - "$folded" <<'PY'
import sys
total = 0
shares = {"kernel": 0, "memcpy": 0, "mimalloc": 0, "SHA-256": 0, "hyper": 0, "tokio": 0,
          "http (header maps)": 0, "clock reads (vDSO)": 0}
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip().rpartition(" ")
    count = int(count)
    total += count
    leaf = stack.split(";")[-1]
    if leaf.endswith("_[k]"):
        shares["kernel"] += count
    elif "memcpy" in leaf or "memmove" in leaf:
        shares["memcpy"] += count
    elif leaf.startswith(("mi_", "_mi_")):
        shares["mimalloc"] += count
    elif "sha2::" in leaf:
        shares["SHA-256"] += count
    elif leaf.startswith("hyper::"):
        shares["hyper"] += count
    elif leaf.startswith("tokio::"):
        shares["tokio"] += count
    elif leaf.startswith("http::"):
        shares["http (header maps)"] += count
    elif "clock_gettime" in leaf or leaf == "read_tsc":
        shares["clock reads (vDSO)"] += count
for name, count in shares.items():
    print(f"  {name:20} {100 * count / max(total, 1):5.1f} % of samples (leaf frames)")
PY
