#!/usr/bin/env bash
# Runs every test: lints, native unit and property tests, the core crate's tests compiled to
# wasm32-wasip1 and run under Wasmtime, then end-to-end tests against the real Envoy binary.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

scripts/setup.sh

step "format and lints (clippy denies unwrap/expect/panic in filter code)"
cargo fmt --all --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
cargo clippy --quiet -p cordon-filter -p cordon-core --target wasm32-wasip1 -- -D warnings
cargo clippy --quiet -p cordon-dynamic --features test-faults -- -D warnings

step "filter module (and the test-only fault-injection build)"
scripts/build-wasm.sh --test-faults

step "native dynamic module (and its fault-injection build), ABI symbols checked against the pinned Envoy"
scripts/build-dynamic.sh --test-faults

step "native tests"
cargo nextest run --workspace --no-fail-fast

step "fuzz targets (SSE parser, JSON rewriter, JSON scanner against serde_json, engine; policy decoder and compiler), bounded"
if cargo +nightly --version >/dev/null 2>&1; then
  scripts/fuzz.sh filters/redact/fuzz "${CORDON_FUZZ_SECONDS:-20}" engine sse json scan
  scripts/fuzz.sh filters/core/fuzz "${CORDON_FUZZ_SECONDS:-20}" policy
else
  echo "WARNING: no nightly toolchain (rustup toolchain install nightly): fuzz targets NOT run" >&2
fi

step "core tests compiled to wasm32-wasip1 (Wasmtime runner)"
CARGO_TARGET_WASM32_WASIP1_RUNNER="$PWD/.venv/bin/python $PWD/scripts/wasi-run.py" \
  cargo test --quiet -p cordon-core --target wasm32-wasip1 --lib --tests

step "binaries the end-to-end tests run"
cargo build --quiet -p cordon-control-plane -p cordonctl -p cordon-verify -p cordon-oci --bins

step "end-to-end tests (real Envoy, real module, fake model upstream)"
.venv/bin/python -m pytest tests -q -n 4 -p no:cacheprovider
