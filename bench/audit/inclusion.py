#!/usr/bin/env python3
"""Benchmark: time from the end of an exchange to its record's inclusion under a signed head.

Runs the real thing on loopback: the control plane, Envoy with the Cordon module
(`cordon.identity` + the audit singleton) and the fake model upstream. Sends requests at a
steady rate, then reads every record's time (written when the exchange ended, in Envoy) and
every signed tree head (size, signing time, in the control plane) from `cordonctl audit export`
and `audit query`: a record's inclusion time is the first head whose size covers its leaf.

The baseline in the same run is the control plane's head interval (it signs at most every
500 ms while entries arrive): the ratio says how much of the latency is the head cadence and
how much is delivery (queue, batch, signature, ingest). Goal (issue 9): p99 <= 1 s.

Usage:  .venv/bin/python bench/audit/inclusion.py [--requests N] [--rate R]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from tests.harness import envoy as E  # noqa: E402
from tests.harness.control_plane import ControlPlane, node_key, policy_stream_extension  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream  # noqa: E402
from tests.harness.identity import key_digest  # noqa: E402

NODE = "bench-inclusion-node"
KEY = "sk-bench-inclusion-0123456789"
HEAD_INTERVAL_MS = 500
POLICY = {
    "identity": {"api_keys": [{"id": "k-bench", "sha256": key_digest(KEY), "principal": {"user": "bench", "team": "perf"}}]},
    "models": [{"match": {"team": "perf"}, "allow": ["gpt-4o-mini"]}],
}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    args = ap.parse_args()

    cp = ControlPlane().start()
    up = FakeUpstream()
    env = None
    try:
        seed = node_key(cp, NODE)
        ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM, ["CORDON_NODE_KEY"], audit={"node_key_env": "CORDON_NODE_KEY"})
        cfg = E.bootstrap([E.listener("main", [E.wasm_filter("cordon.identity", {"policy": POLICY}, ["CORDON_NODE_KEY"])], "model")],
                          [E.cluster("model", up.port), E.cluster("cordon_control_plane", cp.port, http2=True)],
                          extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "bench"}})
        env = E.Envoy.start(cfg, env={"CORDON_NODE_KEY": seed})
        s = requests.Session()
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        gap = 1.0 / args.rate
        t0 = time.monotonic()
        for i in range(args.requests):
            wait = t0 + i * gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            r = s.post(env.url() + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=10)
            assert r.status_code == 200, r.text
        sent_s = time.monotonic() - t0
        # Wait for every record and a head over all of them.
        deadline = time.monotonic() + 30
        while True:
            entries = cp.ctl("audit", "query", "--node", NODE, "--limit", "10000").get("entries", [])
            if len(entries) >= args.requests or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(2 * HEAD_INTERVAL_MS / 1000)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "audit.jsonl"
            cp.ctl("audit", "export", "--out", str(out), json_out=False)
            heads = sorted((h["size"], h["time_ms"]) for h in map(json.loads, out.read_text().splitlines()) if h.get("type") == "head")
        lat = []
        for e in entries:
            leaf, written = int(e["leaf"]), int(e["time_unix_ms"])
            signed = next((t for size, t in heads if size > leaf), None)
            if signed is not None:
                lat.append(signed - written)
        assert len(lat) == len(entries) == args.requests, (len(lat), len(entries))
        p50, p99, worst = pct(lat, 50), pct(lat, 99), max(lat)
        print(f"{args.requests} requests in {sent_s:.1f} s ({args.requests / sent_s:.0f}/s), every one recorded and included under a signed head")
        print(f"end of exchange -> signed head:  p50 {p50:.0f} ms   p99 {p99:.0f} ms   max {worst:.0f} ms   ({len(heads)} heads)")
        print(f"baseline (head interval {HEAD_INTERVAL_MS} ms): p99 / interval = {p99 / HEAD_INTERVAL_MS:.2f}   goal p99 <= 1000 ms: {'met' if p99 <= 1000 else 'NOT met'}")
        return 0
    finally:
        if env is not None:
            env.cleanup()
        up.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
