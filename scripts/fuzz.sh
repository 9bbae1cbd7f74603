#!/usr/bin/env bash
# Runs every fuzz target of one fuzz crate for a bounded time from its seed corpora.
# Uses cargo-fuzz when installed, else builds with the same sanitizer-coverage flags by hand.
# Needs a nightly toolchain. Usage: scripts/fuzz.sh <fuzz dir> <seconds> <target>...
set -euo pipefail
dir="$1" secs="$2"
shift 2
cd "$dir"
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  for t in "$@"; do
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -max_len=4096
  done
  exit 0
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions" \
  cargo +nightly build --release --target "$triple" --target-dir target/cov
for t in "$@"; do
  work="$(mktemp -d)"
  cp corpus/"$t"/seed-* "$work"/
  ./target/cov/"$triple"/release/"$t" "$work" -max_total_time="$secs" -max_len=4096
  rm -rf "$work"
done
