#!/usr/bin/env bash
# Runs every fuzz target for a short while (SECONDS_PER_TARGET, default 20) on its checked-in
# corpus: a smoke test that the targets build and that nothing in the corpus, or near it,
# crashes. New inputs go to a temporary directory, so the checkout stays as it is.
#
# Needs cargo-fuzz on PATH; on this stable toolchain RUSTC_BOOTSTRAP=1 lets it pass the
# nightly-only flags it needs (-Zsanitizer, -Cpasses=sancov-module). Long runs: see README.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-20}"
export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# -O: optimised, with debug assertions (as `cargo fuzz run` builds by default); no sanitizer is
# needed for safe Rust, and building without one is minutes faster.
flags=(-O -s none)
cargo fuzz build "${flags[@]}"
for target in $(cargo fuzz list); do
  mkdir -p "$scratch/$target" "corpus/$target"
  echo "== fuzz $target for ${seconds}s"
  log="$scratch/$target.log"
  if ! cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
done
echo "fuzz smoke: every target ran ${seconds}s clean"
