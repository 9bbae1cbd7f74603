#!/usr/bin/env bash
# The demo: builds the module, starts Envoy with the filter and the fake model upstream, and
# shows each request's fate. Set-up included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-wasm.sh
cargo build --quiet -p cordon-control-plane -p cordonctl -p cordon-verify --bins
exec .venv/bin/python scripts/demo.py "$@"
