#!/usr/bin/env python3
"""What streaming redaction adds to a live token stream, through the real Envoy.

(a) Envoy with no filter and (b) Envoy with `cordon.redact` (default detector set) in front of the
same fake upstream streaming 64 chat deltas 20 ms apart. Measured at the client, interleaved
a, b, a, b, ...: time to first token (TTFT, from sending the request to the first content delta)
and the gap between consecutive deltas. Prints p50/p99 of each and b−a. Loopback only.

    .venv/bin/python bench/streaming/run.py [--streams 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness import envoy as E  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream, Script  # noqa: E402
from tests.harness.sse import SSEStream  # noqa: E402

DELTAS = 64
GAP_S = 0.020


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def one_stream(env: E.Envoy, upstream: FakeUpstream) -> tuple[float, list[float]]:
    # Ordinary prose with an e-mail address now and then, as real completions have.
    words = [f"word{i} " if i % 16 else f"mail{i}@example.com " for i in range(DELTAS)]
    upstream.push(Script(chunks=words, delay_s=GAP_S))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "go"}], "stream": True}
    t0 = time.monotonic()
    times = []
    with SSEStream(env.url() + "/v1/chat/completions", body) as s:
        for e in s:
            if e.data != "[DONE]":
                doc = e.json()
                if doc.get("choices") and doc["choices"][0]["delta"].get("content"):
                    times.append(e.t)
    return (times[0] - t0) * 1000, [(b - a) * 1000 for a, b in zip(times, times[1:])]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=40)
    args = ap.parse_args()
    upstream = FakeUpstream()
    plain = E.Envoy.start(E.bootstrap([E.listener("main", [], "model")], [E.cluster("model", upstream.port)]))
    redact_cfg = {"policy": {"routes": [{"name": "all", "path_prefix": "/", "accept": [["api_key"]]}]}}
    redacting = E.Envoy.start(E.bootstrap([E.listener("main", [E.wasm_filter("cordon.redact", redact_cfg)], "model")], [E.cluster("model", upstream.port)]))
    try:
        results = {"a": ([], []), "b": ([], [])}
        for i in range(args.streams):
            for name, env in (("a", plain), ("b", redacting)):
                ttft, gaps = one_stream(env, upstream)
                results[name][0].append(ttft)
                results[name][1].extend(gaps)
        print(f"{args.streams} streams per variant, {DELTAS} deltas {GAP_S * 1000:.0f} ms apart (fake upstream), interleaved")
        print(f"{'':32}{'TTFT p50':>10}{'TTFT p99':>10}{'gap p50':>10}{'gap p99':>10}   (ms)")
        for name, label in (("a", "a  envoy, no filter"), ("b", "b  cordon.redact")):
            ttft, gaps = results[name]
            print(f"{label:32}{statistics.median(ttft):10.2f}{pct(ttft, 99):10.2f}{statistics.median(gaps):10.2f}{pct(gaps, 99):10.2f}")
        (ta, ga), (tb, gb) = results["a"], results["b"]
        print(f"{'b − a (added)':32}{statistics.median(tb) - statistics.median(ta):10.2f}{pct(tb, 99) - pct(ta, 99):10.2f}"
              f"{statistics.median(gb) - statistics.median(ga):10.2f}{pct(gb, 99) - pct(ga, 99):10.2f}")
        print("goal: <= 0.1 ms added TTFT at p99; no event held longer than the holdback bound requires")
        return 0
    finally:
        plain.cleanup()
        redacting.cleanup()
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
