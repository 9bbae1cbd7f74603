#!/usr/bin/env python3
"""Latency a filter adds to one POST, by how long Envoy sat idle before it.

(a) Envoy with no filter, (b) `cordon.redact` from the wasm module, (n) the same role from the
native dynamic module, in front of the same fake upstream (a non-streamed chat completion).
One keep-alive connection per Envoy (TCP_NODELAY), requests interleaved a, b, n, with a pause
of 0, 20 and 200 ms before each. Prints each variant's median latency at the client and what
b and n add over a. If what a filter adds grows with the pause while its instructions per
request do not change (`bench/cost/instructions.py`), the growth is the cost of coming back
to cold caches (the module's code and data evicted while Envoy waited), not of the work.
Loopback only; bounded by --requests.

    .venv/bin/python bench/latency/run.py [--requests 150] [--pauses 0,20,200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness import envoy as E  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream, Script  # noqa: E402

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}).encode()


def connect(env: E.Envoy) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", env.ports["main"])
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def post(conn: http.client.HTTPConnection, upstream: FakeUpstream) -> float:
    upstream.push(Script(chunks=["hi"]))
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", BODY, {"content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=150, help="per variant and pause")
    ap.add_argument("--pauses", default="0,20,200", help="ms of idle before each request")
    args = ap.parse_args()
    upstream = FakeUpstream()
    cfg = {"policy": {"routes": [{"name": "all", "path_prefix": "/", "accept": [["api_key"]]}]}}
    chains = {"a": [], "b": [E.wasm_filter("cordon.redact", cfg)], "n": [E.dynamic_filter("cordon.redact", cfg)]}
    envoys = {name: E.Envoy.start(E.bootstrap([E.listener("main", f, "model")], [E.cluster("model", upstream.port)]),
                                  env=E.dynamic_module_env() if name == "n" else None)
              for name, f in chains.items()}
    try:
        conns = {name: connect(env) for name, env in envoys.items()}
        for name in envoys:  # warm-up: the first requests compile and allocate
            for _ in range(20):
                post(conns[name], upstream)
        print(f"median ms per POST at the client, {args.requests} per variant and pause, interleaved")
        for pause in [int(p) for p in args.pauses.split(",")]:
            lat = {name: [] for name in envoys}
            for _ in range(args.requests):
                for name in envoys:
                    time.sleep(pause / 1000)
                    lat[name].append(post(conns[name], upstream))
            med = {name: statistics.median(v) for name, v in lat.items()}
            print(f"pause {pause:4d} ms: " + "  ".join(f"{n} {m:.3f}" for n, m in med.items())
                  + f"   added: b {med['b'] - med['a']:+.3f}  n {med['n'] - med['a']:+.3f}")
        return 0
    finally:
        for env in envoys.values():
            env.cleanup()
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
