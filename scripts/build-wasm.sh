#!/usr/bin/env bash
# Builds the filter module (LTO, one codegen unit, panic=abort, stripped) into dist/ with its
# sha256 beside it, as operators reference it from Envoy, Istio and Envoy Gateway configs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p cordon-filter --target wasm32-wasip1 --profile wasm
mkdir -p dist
cp target/wasm32-wasip1/wasm/cordon_filter.wasm dist/cordon.wasm
(cd dist && sha256sum cordon.wasm > cordon.wasm.sha256)
echo "dist/cordon.wasm $(stat -c %s dist/cordon.wasm) bytes, sha256 $(cut -d' ' -f1 dist/cordon.wasm.sha256)"
