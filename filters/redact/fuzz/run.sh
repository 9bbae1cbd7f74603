#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 30 s each) from the seed corpora.
# Uses cargo-fuzz when installed, else builds with the same sanitizer-coverage flags by hand.
# Usage: filters/redact/fuzz/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
targets=(engine sse json)
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  for t in "${targets[@]}"; do
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -max_len=4096
  done
  exit 0
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions" \
  cargo +nightly build --release --target "$triple" --target-dir target/cov
for t in "${targets[@]}"; do
  work="$(mktemp -d)"
  cp corpus/"$t"/seed-* "$work"/
  ./target/cov/"$triple"/release/"$t" "$work" -max_total_time="$secs" -max_len=4096
  rm -rf "$work"
done
