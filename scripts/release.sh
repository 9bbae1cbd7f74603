#!/usr/bin/env bash
# Builds Cordon's release artefacts into dist/, reproducibly (same commit -> same bytes):
#   dist/cordon.wasm, dist/cordon.wasm.sha256       the filter module
#   dist/oci/cordon-wasm/                           OCI image layout of the module, Wasm "compat"
#                                                   variant (one tar+gzip layer with plugin.wasm):
#                                                   what Istio's WasmPlugin and Envoy Gateway pull
#   dist/oci/cordon-control-plane/                  OCI image layout of the control plane (+ cordonctl),
#                                                   its shared libraries, running as uid 65532
#   dist/oci/release.txt                            versions, the module's sha256, both manifest digests
# Push a layout with any OCI client, e.g.
#   skopeo copy oci:dist/oci/cordon-wasm:$VERSION docker://registry.example/cordon/wasm:$VERSION
# and reference the module by the manifest digest (WasmPlugin `sha256`, Envoy Gateway `image.sha256`).
#
#   scripts/release.sh              build everything (locked dependencies, paths remapped, LTO)
#   scripts/release.sh --no-build   only write the layouts from dist/cordon.wasm and the binaries in
#                                   $CORDON_RELEASE_BIN_DIR (default: the release build's directory)
# Environment: SOURCE_DATE_EPOCH (default: the commit's time) fixes every timestamp;
# CORDON_RELEASE_OUT (default dist/oci) is where the layouts go.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m[release]\033[0m %s\n' "$*"; }

build=1
[ "${1:-}" = "--no-build" ] && build=0

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
out="${CORDON_RELEASE_OUT:-dist/oci}"
target="${CARGO_TARGET_DIR:-target}"

if [ "$build" = 1 ]; then
  # Reproducible: dependencies exactly as locked, and no machine-specific path in the binaries
  # (panic locations name source files; the toolchain's are already /rustc/<commit>/...).
  # Its own target directory, so these flags do not invalidate the everyday build.
  target="$target/reproducible"
  export CARGO_TARGET_DIR="$target"
  export RUSTFLAGS="--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$PWD=/cordon"
  say "module (wasm32-wasip1, profile wasm)"
  # RUSTFLAGS replaces .cargo/config.toml's target flags: the module's are repeated here.
  RUSTFLAGS="$RUSTFLAGS -C target-feature=+simd128" cargo build --locked --quiet -p cordon-filter --target wasm32-wasip1 --profile wasm
  mkdir -p dist
  cp "$target/wasm32-wasip1/wasm/cordon_filter.wasm" dist/cordon.wasm
  (cd dist && sha256sum cordon.wasm > cordon.wasm.sha256)
  say "control plane and cordonctl (release)"
  cargo build --locked --quiet --release -p cordon-control-plane -p cordonctl
fi
bin_dir="${CORDON_RELEASE_BIN_DIR:-$target/release}"
cargo build --locked --quiet -p cordon-oci
oci="$target/debug/cordon-oci"

[ -f dist/cordon.wasm ] || { echo "no dist/cordon.wasm: run without --no-build (or scripts/build-wasm.sh)" >&2; exit 1; }
(cd dist && sha256sum --check --quiet cordon.wasm.sha256)

say "OCI layout of the module -> $out/cordon-wasm"
"$oci" wasm --module dist/cordon.wasm --out "$out/cordon-wasm" --tag "$version" --revision "$revision"

# The shared libraries the binaries load (glibc, libgcc_s, the dynamic loader), as ldd resolves
# them on this (Debian) build machine: the image needs no base image and no package manager.
cp_bin="$bin_dir/cordon-control-plane"
ctl_bin="$bin_dir/cordonctl"
for b in "$cp_bin" "$ctl_bin"; do [ -x "$b" ] || { echo "missing $b" >&2; exit 1; }; done
mapfile -t libs < <(ldd "$cp_bin" "$ctl_bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(0x/ {print $1}' | sort -u)
say "OCI layout of the control plane -> $out/cordon-control-plane (libraries: ${libs[*]})"
lib_args=()
for l in "${libs[@]}"; do lib_args+=(--lib "$l"); done
"$oci" control-plane --binary "$cp_bin" --binary "$ctl_bin" "${lib_args[@]}" \
  --out "$out/cordon-control-plane" --tag "$version" --revision "$revision"

digest() { sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$1/index.json"; }
{
  echo "version $version"
  echo "revision $revision"
  echo "source_date_epoch $SOURCE_DATE_EPOCH"
  echo "cordon.wasm sha256:$(cut -d' ' -f1 dist/cordon.wasm.sha256)"
  echo "oci cordon-wasm $(digest "$out/cordon-wasm")"
  echo "oci cordon-control-plane $(digest "$out/cordon-control-plane")"
} > "$out/release.txt"
cat "$out/release.txt"
