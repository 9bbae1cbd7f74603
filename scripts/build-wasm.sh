#!/usr/bin/env bash
# Builds the filter module (LTO, one codegen unit, panic=abort, stripped) into dist/ with its
# sha256 beside it, as operators reference it from Envoy, Istio and Envoy Gateway configs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p cordon-filter --target wasm32-wasip1 --profile wasm
mkdir -p dist
cp target/wasm32-wasip1/wasm/cordon_filter.wasm dist/cordon.wasm
(cd dist && sha256sum cordon.wasm > cordon.wasm.sha256)
if [ "${1:-}" = "--test-faults" ]; then
  # A second module with test-only fault injection, for the end-to-end tests; its own target dir
  # so the shipped module's build is never built with the feature.
  cargo build --quiet -p cordon-filter --target wasm32-wasip1 --profile wasm --features test-faults --target-dir target/test-faults
  cp target/test-faults/wasm32-wasip1/wasm/cordon_filter.wasm dist/cordon-test-faults.wasm
  echo "dist/cordon-test-faults.wasm (test only) $(stat -c %s dist/cordon-test-faults.wasm) bytes"
fi
echo "dist/cordon.wasm $(stat -c %s dist/cordon.wasm) bytes, sha256 $(cut -d' ' -f1 dist/cordon.wasm.sha256)"
