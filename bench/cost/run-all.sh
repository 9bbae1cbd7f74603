#!/usr/bin/env bash
# Issue 10's figures in one command: every bench that holds Cordon's cost inside Envoy to its
# goals, each measuring its baseline in the same run and printing ratios. Bounded; loopback only.
#
#   bench/cost/run-all.sh            # quick settings, about 30 minutes on 2 cores under callgrind
#   bench/cost/run-all.sh --full     # the benches' own defaults, plus a 30-minute soak
#
# Needs what scripts/setup.sh installs, dist/ (scripts/build-wasm.sh, scripts/build-dynamic.sh)
# and the control-plane binaries (cargo build -p cordon-control-plane -p cordonctl --bins).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
full=false
[[ "${1:-}" == "--full" ]] && full=true
section() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

section "CPU per request in instructions (callgrind): plain Envoy vs each chain (wasm and native), and the Wasm floor"
if $full; then $py bench/cost/instructions.py; else $py bench/cost/instructions.py --requests 150 --variants a,b,f,r,g,d,e,nb,nr,ng,nd,ngd; fi

section "CPU per request, throughput and latency in time (wrk; wasm, native and Envoy's own filters)"
if $full; then $py bench/identity/run.py; else $py bench/identity/run.py --quick --no-breakdown; fi

section "Cost per streamed chunk in instructions (callgrind): no filter, the wasm callback floor, cordon.redact, cordon.gateway with limits"
if $full; then $py bench/chunk-cost/instructions.py --deltas 300; else $py bench/chunk-cost/instructions.py --deltas 150; fi

section "Fixed CPU per streamed chunk in time (cordon.redact vs no filter)"
if $full; then $py bench/chunk-cost/run.py; else $py bench/chunk-cost/run.py --quick; fi

section "Time to first token and per-delta transit through streaming redaction"
if $full; then $py bench/streaming/run.py --streams 60; else $py bench/streaming/run.py --streams 20; fi

section "Latency added to one POST, by how long Envoy idled before it (cold caches against work)"
if $full; then $py bench/latency/run.py; else $py bench/latency/run.py --requests 60; fi

section "Memory: Envoy RSS by worker count, plain vs wasm vs the native module"
if $full; then $py bench/memory/run.py; else $py bench/memory/run.py --rounds 1; fi

section "Memory under a streaming soak (plain vs cordon.gateway)"
if $full; then $py bench/soak/run.py; else $py bench/soak/run.py --minutes 5 --warmup 20 --sample 10; fi
