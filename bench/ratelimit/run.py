#!/usr/bin/env python3
"""What a fleet-wide limit check costs against a local one, measured in one run.

Variants (the `cordon.identity` role of dist/cordon.wasm, same policy otherwise):

  b  no limits (identity and model access only)
  l  two local limits (requests per key, tokens per team), never refusing
  g  the same two limits with `scope: fleet`, asked of the control plane's rate-limit service
     (cordon-control-plane, in-memory counters), never refusing

Interleaved rounds (b, l, g, b, l, g, ...), medians. Per variant: closed-loop throughput and the
Envoy under test's CPU per request (its process's utime+stime / requests); for g also the
control plane's CPU per request (the other half of a fleet check). Printed ratios: g/l CPU per
request of the Envoy, (g Envoy + control plane)/l, and p50 latency g/l.

Accuracy under load (`--accuracy`, on by default): Envoy with 2 workers, wrk with 64
connections for a few seconds against a limit far below what wrk offers: admitted ÷ allowed,
for a local limit and for a fleet limit (memory backend; `--redis` also runs the fleet limit on
a Redis-backed control plane). The windows are per day, so allowed = the limit (a local GCRA
limit also refills limit × duration / 1 day, under 0.01 % here).

Reuses bench/identity's upstream (an Envoy answering a canned completion), pinning (Envoy
under test on core 0, wrk + upstream + control plane on core 1) and wrk script. No SCHED_FIFO:
absolute numbers move with the machine's other load, the ratios much less.

    .venv/bin/python bench/ratelimit/run.py            # 3 rounds x 3 s, accuracy, ~1 minute
    .venv/bin/python bench/ratelimit/run.py --quick    # 2 rounds x 2 s
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import envoy as E  # noqa: E402
from tests.harness.control_plane import ControlPlane  # noqa: E402
from tests.harness.redis import RedisServer  # noqa: E402

_spec = importlib.util.spec_from_file_location("identity_bench", REPO / "bench" / "identity" / "run.py")
IB = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(IB)  # type: ignore[union-attr]

HUGE = [
    {"name": "per-key", "requests": {"limit": 1_000_000_000, "per": "second"}},
    {"name": "team-tokens", "by": ["team"], "tokens": {"limit": 4_000_000_000, "per": "minute"}},
]
SERVICE = {"cluster": "cordon_control_plane", "timeout_ms": 1000}


def policy(limits: list[dict], fleet: bool) -> dict:
    p = dict(IB.POLICY)
    if limits:
        p["rate_limits"] = [dict(l, scope="fleet") if fleet else l for l in limits]
    if fleet:
        p["rate_limit_service"] = SERVICE
    return p


def config(variant: str, upstream_port: int, cp_port: int, limits: list[dict] = HUGE) -> dict:
    pol = {"b": policy([], False), "l": policy(limits, False), "g": policy(limits, True)}[variant]
    clusters = [E.cluster("model", upstream_port)]
    if variant == "g":
        clusters.append(E.cluster("cordon_control_plane", cp_port, http2=True))
    return E.bootstrap([E.listener("main", [E.wasm_filter("cordon.identity", {"policy": pol})], "model")], clusters)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pin(pid: int, core: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True, capture_output=True)


def accuracy(upstream: IB.PinnedEnvoy, cp: ControlPlane, label: str, fleet: bool, workdir: Path, duration: float) -> dict:
    """Admitted ÷ allowed with 2 workers and 64 connections against a per-day limit of 1000."""
    limit = 1000
    limits = [{"name": f"acc-{label}", "requests": {"limit": limit, "per": "day"}}]
    env = E.Envoy.start(config("g" if fleet else "l", upstream.port(), cp.port, limits), concurrency=2)
    try:
        bench = IB.Bench(workdir, upstream, {"x": env})
        script = bench.script("POST", 0.0)
        out = subprocess.run(["wrk", "-t2", "-c64", f"-d{duration:g}s", "--timeout", "5s", "-s", str(script), env.url()],
                             capture_output=True, text=True, timeout=duration + 60)
        line = next(l for l in out.stdout.splitlines() if l.startswith("CORDON_BENCH "))
        r = json.loads(line.split(" ", 1)[1])
        admitted = r["requests"] - r["non_2xx_3xx"]
        return {"label": label, "offered": r["requests"], "admitted": admitted, "allowed": limit, "ratio": admitted / limit}
    finally:
        env.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--redis", action="store_true", help="also measure accuracy with a Redis-backed control plane")
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    duration = args.duration or (2.0 if args.quick else 3.0)
    workdir = Path(tempfile.mkdtemp(prefix="cordon-bench-rl-"))
    upstream = IB.start_envoy(IB.upstream_config(), IB.CLIENT_CORE)
    cp = ControlPlane().start()
    pin(cp.proc.pid, IB.CLIENT_CORE)
    envoys: dict[str, IB.PinnedEnvoy] = {}
    redis = None
    try:
        for v in ("b", "l", "g"):
            envoys[v] = IB.start_envoy(config(v, upstream.port(), cp.port), IB.ENVOY_CORE)
        for v, env in envoys.items():
            status, body = IB.check(env.url(), IB.KEYS[IB.CALLER][0])
            if status != 200:
                raise SystemExit(f"preflight: {v} answered {status}: {body[:300]!r}\n{env.log()[-2000:]}")
        bench = IB.Bench(workdir, upstream, envoys)
        runs: dict[str, list[dict]] = {v: [] for v in envoys}
        for _ in range(rounds):
            for v in envoys:
                cp0 = IB.cpu_seconds(cp.proc.pid)
                r = bench.run(v, duration)
                r["cp_us_per_req"] = (IB.cpu_seconds(cp.proc.pid) - cp0) / r["requests"] * 1e6
                runs[v].append(r)
        summary = {v: {"rps": med([r["rps"] for r in rs]), "cpu_us": med([r["cpu_us_per_req"] for r in rs]),
                       "cp_us": med([r["cp_us_per_req"] for r in rs]), "p50_ms": med([r["p50_us"] for r in rs]) / 1000}
                   for v, rs in runs.items()}
        print(f"\nfleet-wide vs local limit check: {rounds} rounds x {duration:g} s, medians (Envoy under test: 1 worker on core 0)")
        print(f"{'variant':<34}{'req/s':>10}{'Envoy CPU us/req':>18}{'control plane us/req':>22}{'p50 ms':>9}")
        names = {"b": "b  identity only (no limits)", "l": "l  2 local limits", "g": "g  2 fleet limits (control plane)"}
        for v, s in summary.items():
            print(f"{names[v]:<34}{s['rps']:>10.0f}{s['cpu_us']:>18.1f}{s['cp_us']:>22.1f}{s['p50_ms']:>9.2f}")
        l, g, b = summary["l"], summary["g"], summary["b"]
        print(f"\nEnvoy CPU per request, fleet / local:               {g['cpu_us'] / l['cpu_us']:.2f}x "
              f"(limit check alone: fleet +{g['cpu_us'] - b['cpu_us']:.1f} us vs local +{l['cpu_us'] - b['cpu_us']:.1f} us over b)")
        print(f"Envoy + control plane CPU per request, fleet / local: {(g['cpu_us'] + g['cp_us']) / l['cpu_us']:.2f}x")
        print(f"p50 latency, fleet / local:                          {g['p50_ms'] / l['p50_ms']:.2f}x")
        if not args.no_accuracy:
            print("\naccuracy under load (2 workers, 64 connections, limit 1000 per day): admitted / allowed")
            results = [accuracy(upstream, cp, "local", False, workdir, duration), accuracy(upstream, cp, "fleet-memory", True, workdir, duration)]
            if args.redis:
                redis = RedisServer().start()
                rcp = ControlPlane(extra_args=["--ratelimit-redis-url", redis.url]).start()
                try:
                    results.append(accuracy(upstream, rcp, "fleet-redis", True, workdir, duration))
                finally:
                    rcp.stop()
            for a in results:
                print(f"  {a['label']:<14} offered {a['offered']:>6}  admitted {a['admitted']:>5}  allowed {a['allowed']}  ratio {a['ratio']:.3f}")
    finally:
        for env in envoys.values():
            env.cleanup()
        upstream.cleanup()
        cp.stop()
        if redis:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
