#!/usr/bin/env python3
"""Policy propagation to real Envoys: from `cordonctl apply` returning to every Envoy enforcing
the new version, observed from the outside (a request whose verdict flips with the version).

Baseline, measured in the same run: the duration of the `cordonctl apply` call itself (process
start, gRPC round trip, store write, signing). Prints p50/p99 of both and their ratio.

    .venv/bin/python bench/propagation/run.py [--envoys 3] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import requests  # noqa: E402

from tests.harness import envoy as E  # noqa: E402
from tests.harness.control_plane import ControlPlane, policy_stream_extension  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream  # noqa: E402

POLICY = """
routes: [{name: openai, path_prefix: /v1/, accept: [[api_key]]}]
models:
  - match: {team: bench}
    allow: [{models}]
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoys", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()

    cp = ControlPlane().start()
    up = FakeUpstream()
    envoys: list[E.Envoy] = []
    try:
        cp.apply(POLICY.replace("{models}", '"gpt-4o-mini"'))
        key = cp.ctl("keys", "create", "--id", "k-bench", "--user", "b", "--team", "bench")
        version = key["version"]["version"]
        for i in range(args.envoys):
            ext = policy_stream_extension("cp", [cp.trusted_key], E.WASM)
            cfg = E.bootstrap([E.listener("main", [E.wasm_filter("cordon.identity", {}, [])], "model")],
                              [E.cluster("model", up.port), E.cluster("cp", cp.port, http2=True)],
                              extra={"bootstrap_extensions": [ext], "node": {"id": f"bench-{i}", "cluster": "bench"}})
            envoys.append(E.Envoy.start(cfg))
        for i in range(args.envoys):
            cp.wait_node(f"bench-{i}", lambda n: n["acked_version"] == version)
        headers = {"authorization": f"Bearer {key['plaintext']}"}
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}

        apply_ms: list[float] = []
        propagate_ms: list[float] = []
        for r in range(args.rounds):
            allow = r % 2 == 0  # even rounds allow gpt-4o, odd rounds take it away again
            want = 200 if allow else 403
            models = '"gpt-4o-mini", "gpt-4o"' if allow else '"gpt-4o-mini"'
            seen: dict[int, float] = {}

            def probe(i: int, env: E.Envoy, start_evt: threading.Event) -> None:
                s = requests.Session()
                start_evt.wait()
                while time.monotonic() < deadline:
                    if s.post(env.url() + "/v1/chat/completions", json=body, headers=headers, timeout=5).status_code == want:
                        seen[i] = time.monotonic()
                        return

            go = threading.Event()
            t_start = time.monotonic()
            cp.apply(POLICY.replace("{models}", models), f"bench round {r}")
            t_returned = time.monotonic()
            deadline = t_returned + 10
            threads = [threading.Thread(target=probe, args=(i, e, go)) for i, e in enumerate(envoys)]
            for t in threads:
                t.start()
            go.set()
            for t in threads:
                t.join()
            if len(seen) != len(envoys):
                print(f"round {r}: only {len(seen)}/{len(envoys)} Envoys enforced the new version within 10 s", file=sys.stderr)
                return 1
            apply_ms.append((t_returned - t_start) * 1000)
            # Time from apply returning; an Envoy already enforcing it when probed counts as 0.
            propagate_ms.extend(max(0.0, (t - t_returned) * 1000) for t in seen.values())

        p50a, p99a = statistics.median(apply_ms), pct(apply_ms, 99)
        p50p, p99p = statistics.median(propagate_ms), pct(propagate_ms, 99)
        print(f"policy propagation to {args.envoys} real Envoys, {args.rounds} versions ({len(propagate_ms)} observations)")
        print(f"  baseline: cordonctl apply call   p50 {p50a:7.1f} ms   p99 {p99a:7.1f} ms")
        print(f"  apply returned -> enforced       p50 {p50p:7.1f} ms   p99 {p99p:7.1f} ms")
        print(f"  ratio propagation/apply          p50 {p50p / p50a:7.2f}      p99 {p99p / p99a:7.2f}")
        print(f"  goal: p99 <= 1000 ms to real Envoys -> {'met' if p99p <= 1000 else 'NOT met'}")
        return 0
    finally:
        for e in envoys:
            e.cleanup()
        up.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
