#!/usr/bin/env python3
"""Soak: does Envoy's memory grow under a long streaming load with Cordon's full chain?

Two Envoys (2 workers each) in front of the same fake upstream, driven by the same load in the
same run: (a) plain Envoy, (b) the combined role `cordon.gateway` (identity with an API key,
rate, token and concurrency limits, streaming redaction with the default detectors). Client
threads stream chat completions (32 deltas, e-mail addresses now and then) alternately through
both, for a bounded time and a bounded number of streams. Every `--sample` seconds the RSS of
each Envoy is read from /proc. Printed per variant: RSS after warm-up, at the end and its max,
the growth, and the slope over the second half (MB per hour, least squares); then b's growth
minus a's. Loopback only.

    .venv/bin/python bench/soak/run.py                  # 30 minutes
    .venv/bin/python bench/soak/run.py --minutes 5      # a shorter look
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness import envoy as E  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream, Script  # noqa: E402
from tests.harness.identity import key_digest  # noqa: E402
from tests.harness.sse import SSEStream  # noqa: E402

KEY = "sk-soak-0123456789abcdef"
POLICY = {
    "identity": {"api_keys": [{"id": "k-soak", "sha256": key_digest(KEY), "principal": {"user": "soak", "team": "bench"}}]},
    "models": [{"allow": ["gpt-4o*"]}],
    "rate_limits": [
        {"name": "rpm", "by": ["key"], "requests": {"limit": 10_000_000, "per": "minute"}},
        {"name": "tokens", "by": ["team"], "tokens": {"limit": 1_000_000_000, "per": "hour"}, "on_exceed": "cut"},
        {"name": "streams", "by": ["key"], "concurrent": {"limit": 64}},
    ],
}


def rss_kb(pid: int) -> int:
    """RSS of the Envoy process: the launcher's child if `.venv/bin/envoy` started one."""
    def children(p: int) -> list[int]:
        out = []
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            out += [int(c) for c in task.read_text().split()]
        return out

    def rss(p: int) -> int:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    todo, best = [pid], 0
    while todo:
        p = todo.pop()
        try:
            best = max(best, rss(p))
            todo += children(p)
        except OSError:
            pass
    return best


def slope_mb_per_h(samples: list[tuple[float, int]]) -> float:
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    n = len(half)
    mx = sum(t for t, _ in half) / n
    my = sum(v for _, v in half) / n
    den = sum((t - mx) ** 2 for t, _ in half) or 1.0
    return sum((t - mx) * (v - my) for t, v in half) / den * 3600 / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds of load before the first sample counts")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--max-streams", type=int, default=2_000_000, help="bound on streams per variant")
    ap.add_argument("--sample", type=float, default=15.0)
    args = ap.parse_args()

    words = [f"word{i} " if i % 8 else f"mail{i}@example.com " for i in range(32)]
    upstream = FakeUpstream(default=Script(chunks=words, delay_s=0.002))
    envs = {
        "a": E.Envoy.start(E.bootstrap([E.listener("main", [], "model")], [E.cluster("model", upstream.port)]), concurrency=2),
        "b": E.Envoy.start(E.bootstrap([E.listener("main", [E.wasm_filter("cordon.gateway", {"policy": POLICY})], "model")],
                                       [E.cluster("model", upstream.port)]), concurrency=2),
    }
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me more"}], "stream": True}
    headers = {"authorization": f"Bearer {KEY}"}
    done = {"a": 0, "b": 0}
    errors = {"a": 0, "b": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            for name in ("a", "b"):
                with lock:
                    if done[name] >= args.max_streams:
                        stop.set()
                        return
                try:
                    with SSEStream(envs[name].url() + "/v1/chat/completions", body, headers=headers) as s:
                        ok = s.status == 200 and any(e.data == "[DONE]" for e in s)
                except Exception:
                    ok = False
                with lock:
                    done[name] += 1
                    errors[name] += 0 if ok else 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    try:
        for t in threads:
            t.start()
        time.sleep(args.warmup)
        start = time.monotonic()
        samples: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
        while time.monotonic() - start < args.minutes * 60 and not stop.is_set():
            now = time.monotonic() - start
            for name, env in envs.items():
                samples[name].append((now, rss_kb(env.proc.pid)))
            upstream.clear()  # the fake upstream keeps every request it saw; not Envoy's memory
            time.sleep(args.sample)
        stop.set()
        for t in threads:
            t.join(30)
        print(f"{args.minutes:g} min after {args.warmup:g} s warm-up, {args.clients} clients, streams a={done['a']} b={done['b']}, "
              f"failed a={errors['a']} b={errors['b']}, {len(samples['a'])} samples")
        print(f"{'':26}{'RSS start':>12}{'RSS end':>12}{'RSS max':>12}{'growth':>12}{'slope 2nd half':>18}")
        growth = {}
        for name, label in (("a", "a  envoy, no filter"), ("b", "b  cordon.gateway")):
            s = samples[name]
            first, last, peak = s[0][1] / 1024, s[-1][1] / 1024, max(v for _, v in s) / 1024
            growth[name] = last - first
            print(f"{label:26}{first:10.1f}MB{last:10.1f}MB{peak:10.1f}MB{growth[name]:+10.1f}MB{slope_mb_per_h(s):+13.1f}MB/h")
        print(f"b - a: {growth['b'] - growth['a']:+.1f} MB growth over the soak; b's RSS at start is "
              f"{samples['b'][0][1] / max(1, samples['a'][0][1]):.2f}x a's")
        print("goal: no growth over a 30-minute streaming soak (b - a within sampling noise, slope ~0)")
        return 0 if errors["b"] == 0 else 1
    finally:
        stop.set()
        for env in envs.values():
            env.cleanup()
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
