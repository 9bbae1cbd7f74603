#!/usr/bin/env python3
"""What streaming redaction adds to a live token stream, through the real Envoy.

(a) Envoy with no filter, (h) Envoy's own buffer filter (holds each request until its body is
complete, which redaction must do too: the floor for the request path), (b) Envoy with `cordon.redact` (default detector set) from the wasm
module and (n) the same role from the native dynamic module (dist/libcordon_dynamic.so; skipped
with --no-native), in front of the same fake upstream streaming 64 chat deltas 20 ms apart.
Measured at the client, interleaved a, h, b, n, a, h, b, n, ...: time to first token (TTFT, from sending the request to the first content delta),
the gap between consecutive deltas, and each delta's transit time (from the fake upstream writing
it to the client reading it; both in this process, on one monotonic clock). Transit isolates what
streaming redaction adds per event (holdback included) from the request path, which TTFT also
contains. Prints p50/p99 of each and what b and n add over a, then where the request's time went
inside Envoy, from Envoy's own access-log timestamps (µs after the request's first byte: the
request fully read, the upstream request begun, the upstream response begun, the response head
sent downstream), so the filter's share of TTFT can be told from the client's and the upstream's.
Loopback only.

    .venv/bin/python bench/streaming/run.py [--streams 40] [--no-native]

p99 of time to first token needs many streams; short ones read it in minutes (TTFT does not
depend on what follows the first delta):

    .venv/bin/python bench/streaming/run.py --streams 1000 --deltas 4 --gap-ms 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness import envoy as E  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream, Script  # noqa: E402
from tests.harness.sse import SSEStream  # noqa: E402

DELTAS = 64
GAP_S = 0.020
# Envoy's timestamps per request (COMMON_DURATION, µs from the first byte received downstream).
PHASES = [("DS_RX_END", "request read"), ("US_TX_BEG", "upstream sent"), ("US_RX_BEG", "upstream answered"),
          ("DS_TX_BEG", "head sent")]


def timed_listener(filters: list[dict], log: Path) -> dict:
    """The bench's listener, with an access log of the request's phases inside Envoy."""
    lst = E.listener("main", filters, "model")
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    fmt = " ".join(f"%COMMON_DURATION(DS_RX_BEG:{p}:us)%" for p, _ in PHASES) + "\n"
    hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(log), "log_format": {"text_format_source": {"inline_string": fmt}}}}]
    return lst


def phases(log: Path) -> list[float]:
    """Median µs of each phase over the logged requests (lines with a missing point skipped)."""
    rows = [[int(x) for x in line.split()] for line in log.read_text().splitlines() if line and "-" not in line]
    return [statistics.median(r[i] for r in rows) for i in range(len(PHASES))] if rows else [float("nan")] * len(PHASES)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def one_stream(env: E.Envoy, upstream: FakeUpstream, deltas: int, gap_s: float) -> tuple[float, list[float], list[float]]:
    # Ordinary prose with an e-mail address now and then, as real completions have.
    words = [f"word{i} " if i % 16 else f"mail{i}@example.com " for i in range(deltas)]
    upstream.push(Script(chunks=words, delay_s=gap_s))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "go"}], "stream": True}
    t0 = time.monotonic()
    times = []
    with SSEStream(env.url() + "/v1/chat/completions", body) as s:
        for e in s:
            if e.data != "[DONE]":
                doc = e.json()
                if doc.get("choices") and doc["choices"][0]["delta"].get("content"):
                    times.append(e.t)
    sent = upstream.sent_times[1:1 + deltas]  # event 0 is the role-only delta; then one per word
    assert len(times) == len(sent) == deltas, (len(times), len(sent))  # nothing merged or lost
    transit = [(r - w) * 1000 for w, r in zip(sent, times)]
    return (times[0] - t0) * 1000, [(b - a) * 1000 for a, b in zip(times, times[1:])], transit


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--deltas", type=int, default=DELTAS, help="content deltas per stream")
    ap.add_argument("--gap-ms", type=float, default=GAP_S * 1000, help="the fake upstream's pause between deltas")
    ap.add_argument("--no-native", action="store_true", help="skip n (needs scripts/build-dynamic.sh)")
    args = ap.parse_args()
    upstream = FakeUpstream()
    logs = Path(tempfile.mkdtemp(prefix="cordon-streaming-"))
    redact_cfg = {"policy": {"routes": [{"name": "all", "path_prefix": "/", "accept": [["api_key"]]}]}}
    # h: Envoy's own buffer filter holds the request until its body is complete, as redaction
    # must (it rewrites the prompt before the upstream sees it): what holding alone costs.
    buffer = {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    chains = {"a": [], "h": [buffer], "b": [E.wasm_filter("cordon.redact", redact_cfg)]}
    if not args.no_native:
        chains["n"] = [E.dynamic_filter("cordon.redact", redact_cfg)]
    envoys = {name: E.Envoy.start(E.bootstrap([timed_listener(filters, logs / f"{name}.log")], [E.cluster("model", upstream.port)]),
                                  env=E.dynamic_module_env() if name == "n" else None)
              for name, filters in chains.items()}
    labels = {"a": "a  envoy, no filter", "h": "h  envoy buffer filter", "b": "b  cordon.redact (wasm)", "n": "n  cordon.redact (native)"}
    try:
        results = {name: ([], [], [], []) for name in envoys}
        for i in range(args.streams):
            for name, env in envoys.items():
                ttft, gaps, transit = one_stream(env, upstream, args.deltas, args.gap_ms / 1000)
                r = results[name]
                r[0].append(ttft)
                r[1].extend(gaps)
                r[2].append(transit[0])
                r[3].extend(transit)
        print(f"{args.streams} streams per variant, {args.deltas} deltas {args.gap_ms:g} ms apart (fake upstream), interleaved")
        cols = ["TTFT", "gap", "transit1", "transit"]
        print(f"{'':24}" + "".join(f"{c + ' p50':>15}{c + ' p99':>15}" for c in cols) + "   (ms)")
        print(f"{'':24}(transit1: the first content delta; transit: every delta)")
        stats = {}
        for name in envoys:
            stats[name] = [f(v) for v in results[name] for f in (statistics.median, lambda v: pct(v, 99))]
            print(f"{labels[name]:24}" + "".join(f"{x:15.3f}" for x in stats[name]))
        for name in envoys:
            if name != "a":
                print(f"{name + ' − a (added)':24}" + "".join(f"{x - y:15.3f}" for y, x in zip(stats["a"], stats[name])))
        time.sleep(1.5)  # the access log is flushed every second
        print(f"\ninside Envoy, median µs after the request's first byte ({', '.join(f'{label}: {p}' for p, label in PHASES)}):")
        print(f"{'':24}" + "".join(f"{label:>20}" for _, label in PHASES))
        inside = {name: phases(logs / f"{name}.log") for name in envoys}
        for name in envoys:
            print(f"{labels[name]:24}" + "".join(f"{x:20.0f}" for x in inside[name]))
        for name in envoys:
            if name != "a":
                print(f"{name + ' − a (added)':24}" + "".join(f"{x - y:20.0f}" for y, x in zip(inside["a"], inside[name])))
        print("goals: added TTFT at p99 <= 0.1 ms (wasm, issue 10), <= 0.05 ms (native, issue 12);"
              " no event held longer than the holdback bound requires")
        return 0
    finally:
        for env in envoys.values():
            env.cleanup()
        upstream.stop()
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
