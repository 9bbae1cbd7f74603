#!/usr/bin/env bash
# Builds the native Envoy dynamic module (filters/dynamic) into dist/libcordon_dynamic.so with its
# sha256 beside it. Profile `dynamic` = release with panic=unwind: every hook catches panics and
# fails closed (a module built with panic=abort refuses to load). The module runs unsandboxed in
# Envoy's address space and is tied to the Envoy version whose ABI it was built for: see
# docs/dynamic-module.md. Then checks the library's ABI symbols against the pinned Envoy binary.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet -p cordon-dynamic --profile dynamic
mkdir -p dist
cp "$target/dynamic/libcordon_dynamic.so" dist/libcordon_dynamic.so
(cd dist && sha256sum libcordon_dynamic.so > libcordon_dynamic.so.sha256)
scripts/check-dynamic-abi.sh dist/libcordon_dynamic.so
echo "dist/libcordon_dynamic.so $(stat -c %s dist/libcordon_dynamic.so) bytes, sha256 $(cut -d' ' -f1 dist/libcordon_dynamic.so.sha256)"
