#!/usr/bin/env python3
"""The cost per streamed response chunk inside Envoy, in **instructions** (callgrind): the figure
that holds on a busy, shared machine, where `run.py`'s CPU times move by 2x with the load.

Each variant's Envoy runs under `valgrind --tool=callgrind` (one worker, as bench/cost). The fake
upstream streams an OpenAI chat completion of N delta events, each written on its own with a gap
long enough that Envoy (slowed ~50x by valgrind) reads each as its own chunk. After a warm-up
stream, the counters are zeroed, one stream of N deltas runs, and the counters are dumped:
user-space instructions of the whole Envoy per chunk the upstream wrote. Two delta sizes split the
cost into a fixed part per chunk and a part per content byte. Variants, measured in one run:

  a    Envoy, no filter (the baseline every ratio is against)
  t    cordon.redact, the stream labelled text/plain: passed unscanned, so t - a is what the
       wasm body callback costs by itself (the floor for any Wasm filter that sees each chunk)
  b    cordon.redact (default detectors) from dist/cordon.wasm (CORDON_WASM overrides it)
  g    cordon.gateway (identity, rate and token limits, redaction in one filter) with
       bench/identity's limits policy and an API key: the stream is also read for token usage
  o, og  b and g from --baseline-wasm FILE (an earlier build), so a change is held to the build
       before it in the same run
  n    cordon.redact as b, from the native dynamic module (dist/libcordon_dynamic.so,
       scripts/build-dynamic.sh; CORDON_DYNAMIC_MODULE overrides it): the same role without V8
  ng   cordon.gateway as g, from the native dynamic module
  nt   t from the native dynamic module: nt - a is what Envoy charges a dynamic module's body
       hook per chunk by itself (the floor for any native filter that sees each chunk)

Checked in every stream, else the bench stops: HTTP 200, the content the client received equals
what the upstream sent, [DONE] at the end, and the HTTP chunks Envoy forwarded (for a: one per
upstream event, else events were read together and the per-chunk figure would be too low).

    .venv/bin/python bench/chunk-cost/instructions.py                       # a,t,b; 300 deltas of 8 B and 1 KiB
    .venv/bin/python bench/chunk-cost/instructions.py --baseline-wasm /tmp/old.wasm --variants a,t,o,b,og,g
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import time
from pathlib import Path
import sys

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.cost import instructions as cg  # noqa: E402
from bench.identity import run as ident  # noqa: E402
from tests.harness import envoy as E  # noqa: E402
from tests.harness import fake_upstream  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream  # noqa: E402
from tests.harness.rawhttp import RawConnection  # noqa: E402

_spec = importlib.util.spec_from_file_location("chunk_cost_run", Path(__file__).with_name("run.py"))
assert _spec and _spec.loader
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def start(variant: str, upstream_port: int, baseline: Path | None) -> cg.Callgrind:
    filters = {
        "a": [],
        "t": [E.wasm_filter("cordon.redact", run.REDACT_CFG)],
        "b": [E.wasm_filter("cordon.redact", run.REDACT_CFG)],
        "o": [E.wasm_filter("cordon.redact", run.REDACT_CFG, wasm=baseline or E.WASM)],
        "g": [E.wasm_filter("cordon.gateway", {"policy": ident.POLICY_LIMITS})],
        "og": [E.wasm_filter("cordon.gateway", {"policy": ident.POLICY_LIMITS}, wasm=baseline or E.WASM)],
        "n": [E.dynamic_filter("cordon.redact", run.REDACT_CFG)],
        "nt": [E.dynamic_filter("cordon.redact", run.REDACT_CFG)],
        "ng": [E.dynamic_filter("cordon.gateway", {"policy": ident.POLICY_LIMITS})],
    }[variant]
    env_vars = E.dynamic_module_env() if variant in ("n", "nt", "ng") else {}
    env = cg.Callgrind(config=E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream_port)]), concurrency=1,
                       env=env_vars)
    env.tag = f"chunk-{variant}"
    saved, E.ENVOY_BIN = E.ENVOY_BIN, cg.REAL_ENVOY
    try:
        env._launch(600.0)
    finally:
        E.ENVOY_BIN = saved
    return env


def measure(variant: str, upstream: FakeUpstream, baseline: Path | None, n: int, sizes: list[int], delay: float) -> dict[int, dict]:
    """Instructions per chunk of one variant, per delta size."""
    env = start(variant, upstream.port, baseline)
    run.FLOOR_HEADERS.clear()
    run.REQUEST_HEADERS.clear()
    if variant in ("g", "og", "ng"):
        run.REQUEST_HEADERS["authorization"] = f"Bearer {ident.KEYS[ident.CALLER][0]}"
    if variant in ("t", "nt"):
        run.FLOOR_HEADERS["content-type"] = "text/plain; charset=utf-8"
    try:
        conn = RawConnection("127.0.0.1", env.port())
        pid = env.proc.pid
        run.one_stream(env, conn, upstream, run.deltas(100, 8), delay)  # warm-up: V8 tiers, connection
        out = {}
        for size in sizes:
            for f in glob.glob(f"{cg.OUT_DIR}/{env.tag}.{pid}*"):
                os.unlink(f)
            cg.control(pid, "--zero")
            r = run.one_stream(env, conn, upstream, run.deltas(n, size), delay, check_deltas=variant in ("a", "t", "nt"))
            cg.control(pid, "--dump")
            time.sleep(0.5)
            ir = cg.total_ir(f"{cg.OUT_DIR}/{env.tag}.{pid}*")
            out[size] = {"per_chunk": ir / r["sent"], "sent": r["sent"], "frames": r["frames"]}
            print(f"  {variant} {size:>5} B: {ir / r['sent']:>12,.0f} instructions per chunk "
                  f"({r['sent']} events written, {r['frames']} HTTP chunks forwarded)", file=sys.stderr, flush=True)
        return out
    finally:
        run.FLOOR_HEADERS.clear()
        env.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="a,t,b,g", help="a,t,b,g,n,ng and o,og (need --baseline-wasm); a is always measured")
    ap.add_argument("--deltas", type=int, default=300)
    ap.add_argument("--sizes", default="8,1024")
    ap.add_argument("--delay-ms", type=float, default=15.0, help="gap between upstream events (default 15 ms: valgrind is slow)")
    ap.add_argument("--baseline-wasm", type=Path, help="an earlier build of the module, variant o")
    args = ap.parse_args()
    variants = ["a"] + [v for v in args.variants.split(",") if v != "a"]
    if {"o", "og"} & set(variants) and not args.baseline_wasm:
        raise SystemExit("variants o and og need --baseline-wasm FILE")
    sizes = [int(s) for s in args.sizes.split(",")]
    fake_upstream._Handler.disable_nagle_algorithm = True
    upstream = FakeUpstream()
    res: dict[str, dict[int, dict]] = {}
    try:
        for v in variants:
            res[v] = measure(v, upstream, args.baseline_wasm, args.deltas, sizes, args.delay_ms / 1000)
    finally:
        upstream.stop()
    a = res["a"]
    print(f"\ninstructions of the whole Envoy per streamed chunk (callgrind, {args.deltas} deltas per size, one worker); "
          f"added = x - a, ratio = x / a")
    print(f"{'variant':<8}" + "".join(f"{f'{s} B: per chunk':>18} {'added':>9} {'x/a':>6}" for s in sizes) + f" {'fixed added':>12} {'per byte':>9}")
    for v in variants:
        row, added = f"{v:<8}", {}
        for s in sizes:
            x = res[v][s]["per_chunk"]
            added[s] = x - a[s]["per_chunk"]
            row += f"{x:>18,.0f} {added[s]:>9,.0f} {x / a[s]['per_chunk']:>6.2f}"
        if len(sizes) >= 2:
            lo, hi = sizes[0], sizes[-1]
            per_byte = (added[hi] - added[lo]) / (hi - lo)
            row += f" {added[lo] - per_byte * lo:>12,.0f} {per_byte:>9.1f}"
        print(row)
    for v in variants:
        for s in sizes:
            if v == "a" and res[v][s]["frames"] < res[v][s]["sent"] - 3:
                print(f"warning: a forwarded {res[v][s]['frames']} chunks for {res[v][s]['sent']} events at {s} B: "
                      f"events were read together; raise --delay-ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
