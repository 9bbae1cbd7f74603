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
if [ "${1:-}" = "--test-faults" ]; then
  # A second library with test-only fault injection (a hook panics on request), for the
  # end-to-end tests; its own target dir so the shipped library is never built with the feature.
  # Same file name (Envoy loads lib<name>.so from a search path), another directory.
  cargo build --quiet -p cordon-dynamic --profile dynamic --features test-faults --target-dir "$target/test-faults"
  mkdir -p dist/test-faults
  cp "$target/test-faults/dynamic/libcordon_dynamic.so" dist/test-faults/libcordon_dynamic.so
  echo "dist/test-faults/libcordon_dynamic.so (test only) $(stat -c %s dist/test-faults/libcordon_dynamic.so) bytes"
fi
echo "dist/libcordon_dynamic.so $(stat -c %s dist/libcordon_dynamic.so) bytes, sha256 $(cut -d' ' -f1 dist/libcordon_dynamic.so.sha256)"
