#!/usr/bin/env bash
# bench/callgrind.sh: instructions per request of a proxy, counted by valgrind's callgrind —
# the figure that does not depend on the machine's noise.
#
# Runs the system under test twice under `valgrind --tool=callgrind`, sending it exactly N1
# and then N2 requests (bench/lib/fixed.py, keep-alive, 4 connections), and prints
#   instructions/request = (Ir(N2) - Ir(N1)) / (N2 - N1)
# so start-up, warm-up and shutdown cancel out. Every answer must be 2xx.
#
# Usage: bench/callgrind.sh --port PORT [--n1 500] [--n2 2500] [--out DIR] [--name NAME]
#                           [--header 'name: value' ...] [--path P] [--body-file F]
#                           -- COMMAND ARGS...     (the system under test, in the foreground)
# Prints `NAME instructions/request: X` and writes DIR/NAME.N2.callgrind (the profile of the
# longer run, for callgrind_annotate or kcachegrind).
# Valgrind's software SHA-256 and AES stand in for SHA-NI/AES-NI: hashing looks dearer than
# on real hardware; the SHA-256 share is counted and a second figure without it is printed.

set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PORT="" N1=500 N2=2500 OUT=${TMPDIR:-/tmp} NAME=sut EXTRA=()
while (($#)); do
    case $1 in
        --port) PORT=$2; shift ;;
        --n1) N1=$2; shift ;;
        --n2) N2=$2; shift ;;
        --out) OUT=$2; shift ;;
        --name) NAME=$2; shift ;;
        --header | --path | --body-file) EXTRA+=("$1" "$2"); shift ;;
        --) shift; break ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
    shift
done
[[ -n $PORT && $# -gt 0 ]] || { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install -y valgrind)" >&2; exit 1; }
mkdir -p "$OUT"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

count_cmd() {
    local n=$1 file=$OUT/$NAME.$1.callgrind pid i
    rm -f "$file" "$file".*
    valgrind --tool=callgrind --callgrind-out-file="$file" "${CMD[@]}" \
        >/dev/null 2>"$OUT/$NAME.$n.valgrind.log" &
    pid=$!
    for ((i = 0; i < 600; i++)); do
        port_open "$PORT" && break
        kill -0 "$pid" 2>/dev/null || { tail "$OUT/$NAME.$n.valgrind.log" >&2; exit 1; }
        sleep 0.1
    done
    ((i < 600)) || { echo "nothing listens on $PORT under valgrind" >&2; kill "$pid"; exit 1; }
    python3 "$BENCH_DIR/lib/fixed.py" --target "127.0.0.1:$PORT" --requests "$n" "${EXTRA[@]}" ||
        { kill -TERM "$pid"; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    awk '/^(summary|totals):/ {print $2; exit}' "$file"
}

# Instructions spent in the software SHA-256 (inclusive) of a profile: valgrind's CPU has
# no SHA-NI, so the sha2 crate falls back to its portable code, which the real CPU never runs.
soft_sha() {
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '/sha2::sha256::soft::compress/ { gsub(",", "", $1); v = $1 + 0; if (v > max) max = v }
             END { print max + 0 }'
}

CMD=("$@")
I1=$(count_cmd "$N1")
S1=$(soft_sha "$OUT/$NAME.$N1.callgrind")
I2=$(count_cmd "$N2")
S2=$(soft_sha "$OUT/$NAME.$N2.callgrind")
python3 -c "import sys; n1,n2,i1,i2,s1,s2=map(int,sys.argv[1:]); d=n2-n1; sha=(s2-s1)/d
print(f'$NAME instructions/request: {(i2-i1)/d:,.0f}  (Ir {i1:,} at {n1} requests, {i2:,} at {n2})'
      + (f'; without valgrind\'s software SHA-256: {(i2-i1)/d-sha:,.0f}' if sha else ''))" \
    "$N1" "$N2" "$I1" "$I2" "$S1" "$S2"
