#!/usr/bin/env python3
"""Redaction engine throughput natively and compiled to wasm, in the same run.

Runs the engine bench (`filters/redact/examples/bench.rs`: default detector set, a deterministic
LLM-like corpus pushed through `StreamRedactor` at chunk sizes 16 B..64 KiB, against a plain
Aho-Corasick + memchr + digit-count pass over the same bytes, median of 5 runs per size) as:

  native    x86-64, `--release` (opt-level 3, LTO, 1 codegen unit): the figure docs/redaction.md quotes
  v8        wasm32-wasip1 built with the `wasm` cargo profile (what scripts/build-wasm.sh ships:
            release + opt-level "s"), run by Node's WASI in V8 with `--no-liftoff`: Envoy's V8
            runtime (proxy-wasm-cpp-host) also disables Liftoff, so every function runs as
            TurboFan code, as in Envoy
  wasmtime  the same .wasm under Wasmtime (PyPI `wasmtime`, Cranelift), unless --no-wasmtime
  v8-O3     with --opt3: the example built for wasm32-wasip1 with `--release` (opt-level 3), in
            V8 — shows what the module's opt-level "s" costs
  v8-simd128  with --simd128: the `wasm` profile plus `-C target-feature=+simd128` (memchr's wasm
            SIMD paths; V8 runs wasm SIMD), in V8. Built in its own target directory
            (target/wasm-engine-simd128) so that the changed RUSTFLAGS do not invalidate the
            shared target directory's cache

Each round runs every variant once over all chunk sizes (interleaved native, v8, wasmtime, ...);
the tables show medians over rounds. Each variant's own baseline pass runs in the same process,
so "ratio to baseline" is engine MB/s / baseline MB/s of that variant (wasm baseline compiled to
wasm too). wasm/native ratios are paired per round: median [min .. max].

    .venv/bin/python bench/wasm-engine/run.py              # 5 rounds, 8 MiB: about 2 minutes
    .venv/bin/python bench/wasm-engine/run.py --quick      # 1 round, 2 MiB: under half a minute
    .venv/bin/python bench/wasm-engine/run.py --opt3 --simd128 --chunks 16,1024,65536 --out /tmp/w.json

Needs Node >= 20 (`node:wasi`), cargo with the wasm32-wasip1 target and the project venv.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PYTHON = Path(sys.executable)  # the project venv, which has `wasmtime`
# chunk, engine MB/s, AC baseline MB/s, ratio[, Teddy baseline MB/s or n/a (not in wasm), ratio]
ROW = re.compile(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)(?:\s+(n/a|[0-9.]+)(?:\s+[0-9.]+)?)?\s*$")
DEFAULT_CHUNKS = [16, 64, 256, 1024, 4096, 16384, 65536]
# Envoy's V8 (proxy-wasm-cpp-host, src/v8/v8.cc) sets v8_flags.liftoff = false.
NODE_FLAGS = ["--no-liftoff", "--no-warnings"]


def build(profile: str, target: str | None, simd128: bool = False) -> Path:
    """Builds the bench example; returns the executable (.wasm for wasm32-wasip1)."""
    env = dict(os.environ)
    if simd128:
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " -C target-feature=+simd128").strip()
        env["CARGO_TARGET_DIR"] = str(Path(env.get("CARGO_TARGET_DIR", REPO / "target")) / "wasm-engine-simd128")
    cmd = ["cargo", "build", "-p", "cordon-redact", "--example", "bench", "--profile", profile,
           "--message-format=json-render-diagnostics"]
    if target:
        cmd += ["--target", target]
    print(f"building: {'RUSTFLAGS=' + repr(env['RUSTFLAGS']) + ' ' if simd128 else ''}"
          f"{' '.join(c for c in cmd if not c.startswith('--message-format'))}", file=sys.stderr, flush=True)
    t = time.monotonic()
    out = subprocess.run(["nice", "-n", "10", *cmd], cwd=REPO, check=True, capture_output=True, text=True, env=env).stdout
    exe = None
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "bench" and "example" in msg["target"]["kind"]:
            exe = msg.get("executable")
    if not exe:
        raise SystemExit(f"cargo did not report the bench example's executable ({' '.join(cmd)})")
    print(f"  -> {Path(exe).relative_to(REPO) if exe.startswith(str(REPO)) else exe} ({time.monotonic() - t:.0f} s)",
          file=sys.stderr, flush=True)
    return Path(exe)


def run_bench(cmd: list[str], chunks: list[int], core: str | None) -> dict[int, tuple[float, float, float | None]]:
    """Runs one bench process; returns {chunk: (engine MB/s, AC baseline MB/s, Teddy baseline MB/s or None)}."""
    env = {**os.environ, "CHUNKS": ",".join(map(str, chunks))}
    prefix = ["taskset", "-c", core] if core else []
    p = subprocess.run([*prefix, *cmd], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    rows = {}
    for line in p.stdout.splitlines():
        if m := ROW.match(line):
            rows[int(m[1])] = (float(m[2]), float(m[3]), float(m[5]) if m[5] and m[5] != "n/a" else None)
    if sorted(rows) != sorted(chunks):
        raise SystemExit(f"unexpected output from {' '.join(cmd)}:\n{p.stdout}")
    return rows


def version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def med_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, help="rounds, each running every variant once (default 5, quick 1)")
    ap.add_argument("--mib", type=int, help="corpus size in MiB (default 8, quick 2)")
    ap.add_argument("--chunks", help="comma-separated chunk sizes (default 16,64,...,65536)")
    ap.add_argument("--quick", action="store_true", help="1 round over 2 MiB")
    ap.add_argument("--no-wasmtime", action="store_true", help="skip the Wasmtime variant")
    ap.add_argument("--opt3", action="store_true", help="also run the wasm built with opt-level 3 (--release) in V8")
    ap.add_argument("--simd128", action="store_true", help="also run the wasm built with +simd128 in V8")
    ap.add_argument("--no-build", action="store_true", help="use the already-built examples (fails if missing)")
    ap.add_argument("--core", help="pin every bench process to this core (taskset -c)")
    ap.add_argument("--out", type=Path, help="write every round's numbers and the summary as JSON")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    mib = args.mib or (2 if args.quick else 8)
    chunks = [int(c) for c in args.chunks.split(",")] if args.chunks else DEFAULT_CHUNKS
    if subprocess.run(["node", "-e", "require('node:wasi')"], capture_output=True).returncode != 0:
        raise SystemExit("needs Node >= 20 with node:wasi on PATH")

    profiles = tomllib.loads((REPO / "Cargo.toml").read_text()).get("profile", {})
    if args.no_build:
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        exes = {"native": target_dir / "release/examples/bench",
                "wasm": target_dir / "wasm32-wasip1/wasm/examples/bench.wasm",
                "wasm-O3": target_dir / "wasm32-wasip1/release/examples/bench.wasm",
                "wasm-simd128": target_dir / "wasm-engine-simd128/wasm32-wasip1/wasm/examples/bench.wasm"}
    else:
        exes = {"native": build("release", None), "wasm": build("wasm", "wasm32-wasip1")}
        if args.opt3:
            exes["wasm-O3"] = build("release", "wasm32-wasip1")
        if args.simd128:
            exes["wasm-simd128"] = build("wasm", "wasm32-wasip1", simd128=True)
    node_runner = ["node", *NODE_FLAGS, str(HERE / "wasi-run.mjs")]
    variants = {
        "native": [str(exes["native"]), str(mib)],
        "v8": [*node_runner, str(exes["wasm"]), str(mib)],
    }
    if not args.no_wasmtime and importlib.util.find_spec("wasmtime") is None:
        print(f"warning: {PYTHON} has no `wasmtime` module (run with .venv/bin/python); skipping the Wasmtime variant", file=sys.stderr)
        args.no_wasmtime = True
    if not args.no_wasmtime:
        variants["wasmtime"] = [str(PYTHON), str(HERE / "wasmtime_run.py"), str(exes["wasm"]), str(mib)]
    if args.opt3:
        variants["v8-O3"] = [*node_runner, str(exes["wasm-O3"]), str(mib)]
    if args.simd128:
        variants["v8-simd128"] = [*node_runner, str(exes["wasm-simd128"]), str(mib)]
    for name, cmd in variants.items():
        exe = Path(cmd[-2])
        if not exe.exists():
            raise SystemExit(f"{exe} is missing (variant {name}); run without --no-build")

    commit = version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if commit == "?":
        commit, dirty = "unknown (not a git checkout)", ""
    else:
        dirty = version(["git", "-C", str(REPO), "status", "--porcelain", "--", "filters/redact"])
    wasm_profile = {**profiles.get("release", {}), **profiles.get("wasm", {})}
    wasm_profile.pop("inherits", None)
    meta = {
        "commit": commit + (" + uncommitted changes in filters/redact" if dirty else ""),
        "rustc": version(["rustc", "-V"]),
        "node": version(["node", "--version"]) + ", V8 " + version(["node", "-p", "process.versions.v8"]),
        "node_flags": NODE_FLAGS,
        "wasmtime": version([str(PYTHON), "-c", "import importlib.metadata as m; print(m.version('wasmtime'))"]),
        "wasm_profile": wasm_profile,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start",
        "mib": mib, "rounds": rounds, "chunks": chunks,
    }
    print(f"{mib} MiB corpus, chunks {','.join(map(str, chunks))}, {rounds} round(s) of {', '.join(variants)}; "
          f"each figure inside a run is the median of 5 passes", flush=True)

    # results[variant][chunk] = [(engine, AC base, Teddy base or None), ...] one per round
    results: dict[str, dict[int, list[tuple[float, float, float | None]]]] = {v: {c: [] for c in chunks} for v in variants}
    started = time.monotonic()
    for r in range(rounds):
        t = time.monotonic()
        for name, cmd in variants.items():
            for c, pair in run_bench(cmd, chunks, args.core).items():
                results[name][c].append(pair)
        print(f"round {r + 1}/{rounds}: {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)

    def engine(v: str, c: int) -> list[float]:
        return [e for e, _, _ in results[v][c]]

    def own_ratio(v: str, c: int) -> list[float]:
        return [e / b for e, b, _ in results[v][c]]

    wasm_variants = [v for v in variants if v != "native"]
    summary: dict[str, dict] = {}
    print()
    print("engine MB/s (median over rounds) and wasm/native, paired per round: median [min .. max]")
    head = f"{'chunk':>7} {'native':>8}"
    w1 = {v: max(9, len(v)) for v in variants}
    w2 = {v: max(14, len(v) + 5) for v in variants}
    for v in wasm_variants:
        head += f" {v:>{w1[v]}} {v + '/native':>25}"
    print(head)
    for c in chunks:
        nat = engine("native", c)
        line = f"{c:>7} {statistics.median(nat):>8.1f}"
        summary[str(c)] = {"native_mbps": statistics.median(nat)}
        for v in wasm_variants:
            w = engine(v, c)
            m, lo, hi = med_range([a / b for a, b in zip(w, nat)])
            line += f" {statistics.median(w):>{w1[v]}.1f} {f'{m:.2f} [{lo:.2f} .. {hi:.2f}]':>25}"
            summary[str(c)][f"{v}_mbps"] = statistics.median(w)
            summary[str(c)][f"{v}_over_native"] = [m, lo, hi]
        print(line)

    print()
    print("each variant against its own baseline pass (AC + memchr + digit count, same process, same build)")
    # The engine bench also times the pass with Teddy (SIMD literal search) where it exists: natively
    # on x86-64/aarch64, never in wasm. Shown for native as the stricter ceiling.
    teddy = any(t is not None for c in chunks for _, _, t in results["native"][c])
    head = f"{'chunk':>7}"
    for v in variants:
        head += f" {v + ' base':>{w2[v]}} {'ratio':>6}"
    if teddy:
        head += f" {'native Teddy':>14} {'ratio':>6}"
    print(head)
    for c in chunks:
        line = f"{c:>7}"
        for v in variants:
            base = statistics.median([b for _, b, _ in results[v][c]])
            ratio = statistics.median(own_ratio(v, c))
            line += f" {base:>{w2[v]}.1f} {ratio:>6.3f}"
            summary[str(c)][f"{v}_base_mbps"] = base
            summary[str(c)][f"{v}_ratio_to_base"] = ratio
        if teddy:
            pairs = [(e, t) for e, _, t in results["native"][c] if t is not None]
            tb, tr = statistics.median([t for _, t in pairs]), statistics.median([e / t for e, t in pairs])
            line += f" {tb:>14.1f} {tr:>6.3f}"
            summary[str(c)]["native_teddy_base_mbps"] = tb
            summary[str(c)]["native_ratio_to_teddy"] = tr
        print(line)
    print()
    print(f"commit {meta['commit']}; {meta['rustc']}; node {meta['node']} {' '.join(NODE_FLAGS)}; wasmtime {meta['wasmtime']}")
    print(f"wasm build: profile `wasm` = {json.dumps(wasm_profile, sort_keys=True)}, as scripts/build-wasm.sh; native: --release")
    print(f"{meta['machine']}; bench took {time.monotonic() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rounds": {v: {str(c): results[v][c] for c in chunks} for v in variants},
                                        "summary": summary}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
