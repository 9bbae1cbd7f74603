#!/usr/bin/env python3
"""Benchmark: what Cordon adds to Envoy's resident memory, by build and worker count.

For each worker count (default 2 and 4) it starts, interleaved over rounds (a, b, f, a, b, f, ...):

  a  Envoy with no filter (the baseline),
  b  the wasm module, role `cordon.identity` (one V8 VM per worker),
  f  the same role and policy as the native dynamic module (dist/libcordon_dynamic.so),
  g  f with the policy pushed by a real control plane instead of static: the module's policy
     thread runs (tokio runtime, tonic client, the stream); skip with --no-control-plane,
  w  the floor: bench/floor-module, a Wasm filter that makes identity's host calls and decides
     nothing (what any Wasm filter pays in V8 and per-worker VMs),
  r  the full wasm chain, `cordon.gateway` (identity and streaming redaction in one context),
  n  the full native chain, `cordon.identity` + `cordon.redact` from the dynamic module,
  nf the native floor: bench/native-floor, a dynamic module making identity's ABI calls and
     deciding nothing (what loading any dynamic module and running its filter costs),

sends each the same warm-up (a few hundred allowed and refused requests over several
connections, so every worker has served and compiled what it needs), waits for the memory to
settle and reads VmRSS of the Envoy process from /proc, split into anonymous memory (heaps, V8's
compiled code and VM memories) and file-backed pages (code mapped from the Envoy binary and the
module, shared with the page cache). It prints the medians, the deltas against (a) of the same
worker count and round, and the ratios, all from this one run.

The policy is bench/identity's (a few API keys and a model allowlist).

Usage:  .venv/bin/python bench/memory/run.py [--workers 2 4] [--rounds 3] [--variants a,b,f,g,w,r,n]
            [--no-control-plane] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import envoy as E  # noqa: E402
from tests.harness.control_plane import ControlPlane, native_control_plane  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream  # noqa: E402


def _identity_bench():
    """bench/identity/run.py, for its policy, keys and request body (one definition of each)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("identity_bench", REPO / "bench" / "identity" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ID = _identity_bench()
KEYS, POLICY, request_body = _ID.KEYS, _ID.POLICY, _ID.request_body

VARIANTS = ["a", "b", "f", "g", "w", "r", "n", "nf"]
FLOOR = REPO / "target" / "wasm32-wasip1" / "release" / "cordon_floor_module.wasm"
NODE = "bench-memory-node"
WARMUP_REQUESTS = 400
SETTLE_S = 1.0


def config(variant: str, upstream_port: int, cp: ControlPlane | None) -> dict:
    if variant == "g":
        filters = [E.dynamic_filter("cordon.identity", {"control_plane": native_control_plane(cp, [cp.trusted_key], NODE)})]
    elif variant == "nf":
        filters = [native_floor_filter("identity")]
    elif variant == "w":
        flt = E.wasm_filter("floor", {}, wasm=FLOOR)
        flt["typed_config"]["config"]["vm_config"]["vm_id"] = "floor"
        filters = [flt]
    else:
        filters = {
            "a": [],
            "b": [E.wasm_filter("cordon.identity", {"policy": POLICY})],
            "f": [E.dynamic_filter("cordon.identity", {"policy": POLICY})],
            "r": [E.wasm_filter("cordon.gateway", {"policy": POLICY})],
            "n": [E.dynamic_filter("cordon.identity", {"policy": POLICY}), E.dynamic_filter("cordon.redact", {"policy": POLICY})],
        }[variant]
    return E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream_port)])


def native_floor_filter(role: str) -> dict:
    from bench.cost.instructions import native_floor_filter as flt

    return flt(role)


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and its parts (KiB): anonymous, file-backed, shared memory."""
    fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0] + ":"
        if key in fields:
            out[fields[key]] = int(line.split()[1])
    if set(out) != set(fields.values()):
        raise RuntimeError(f"no VmRSS split for pid {pid}: {out}")
    return out


def smaps_by_file(pid: int) -> dict[str, tuple[int, int]]:
    """Resident KiB (total, anonymous) per mapped file ([heap], [stack:...], [anon] for the rest):
    which library the file-backed pages and the relocated (private, written) pages belong to."""
    out: dict[str, list[int]] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            name = Path(head[5]).name if len(head) > 5 else "[anon]"
        elif head[0] == "Rss:":
            out.setdefault(name, [0, 0])[0] += int(head[1])
        elif head[0] == "Anonymous:":
            out.setdefault(name, [0, 0])[1] += int(head[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


SMAPS = False


def warm_up(url: str) -> dict[int, int]:
    """Allowed and refused requests over several connections; returns the status counts."""
    body = request_body()
    good = KEYS["alice"][0]

    def one(i: int) -> int:
        key = good if i % 4 else "sk-cordon-bench-not-a-key"
        req = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    counts: dict[int, int] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for status in pool.map(one, range(WARMUP_REQUESTS)):
            counts[status] = counts.get(status, 0) + 1
    return counts


def measure(variant: str, workers: int, upstream_port: int, cp: ControlPlane | None, version: str) -> dict[str, int]:
    env = E.dynamic_module_env() if variant in ("f", "g", "n") else {}
    if variant == "nf":
        from bench.cost.instructions import native_floor

        env = {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(native_floor().parent)}
    envoy = E.Envoy.start(config(variant, upstream_port, cp), env=env, concurrency=workers)
    try:
        if variant == "g":
            cp.wait_node(NODE, lambda n: n["connected"] and n["state"] == "SYNCED" and n["acked_version"] == version)
        counts = warm_up(envoy.url())
        # The filter refuses exactly the bad keys; the rest reach the (Python) upstream, which
        # may drop the odd one under this concurrency (503): memory is what is measured here.
        # The floor module decides nothing: it lets the bad keys through as plain Envoy does.
        refused = 0 if variant in ("a", "w", "nf") else WARMUP_REQUESTS // 4
        passed = counts.get(200, 0) + counts.get(503, 0)
        if counts.get(401, 0) != refused or passed != WARMUP_REQUESTS - refused or counts.get(200, 0) < WARMUP_REQUESTS // 2:
            raise RuntimeError(f"{variant}: unexpected replies {counts}\n{envoy.log()[-3000:]}")
        time.sleep(SETTLE_S)
        out = rss_kib(envoy.proc.pid)
        if SMAPS:
            top = sorted(smaps_by_file(envoy.proc.pid).items(), key=lambda kv: -kv[1][0])[:8]
            print(f"  {variant} x{workers}: " + ", ".join(f"{k} {r / 1024:.1f} MiB (anon {a / 1024:.1f})" for k, (r, a) in top), flush=True)
        # tcmalloc's own account (Envoy's admin /memory, bytes): live heap against what it holds.
        mem = json.loads(envoy.admin_get("/memory"))
        out["allocated"] = int(mem.get("allocated", 0)) // 1024
        out["heap"] = int(mem.get("heap_size", 0)) // 1024
        return out
    finally:
        envoy.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="a is always measured")
    ap.add_argument("--no-control-plane", action="store_true", help="skip g (needs target/debug/cordon-control-plane)")
    ap.add_argument("--smaps", action="store_true", help="also print each run's resident memory by mapped file")
    ap.add_argument("--out", type=Path, help="write the runs and summary as JSON")
    args = ap.parse_args()
    global SMAPS
    SMAPS = args.smaps
    chosen = set(args.variants.split(",")) | {"a"}
    if chosen - set(VARIANTS):
        raise SystemExit(f"unknown variants {sorted(chosen - set(VARIANTS))}; known: {VARIANTS}")
    variants = [v for v in VARIANTS if v in chosen and not (args.no_control_plane and v == "g")]
    needed = ([E.WASM] if {"b", "r"} & set(variants) else []) + ([E.DYNAMIC_MODULE] if {"f", "g", "n"} & set(variants) else [])
    for path in needed:
        if not path.exists():
            print(f"{path} is missing: scripts/build-wasm.sh and scripts/build-dynamic.sh", file=sys.stderr)
            return 2
    if "w" in variants:
        subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "cordon-floor-module", "--target", "wasm32-wasip1"], cwd=REPO, check=True)

    runs: list[dict] = []
    cp = ControlPlane().start() if "g" in variants else None
    try:
        version = cp.apply(json.dumps(POLICY))["version"]["version"] if cp else ""
        with FakeUpstream() as up:
            for r in range(args.rounds):
                for workers in args.workers:
                    row = {"round": r, "workers": workers}
                    for v in variants:
                        row[v] = measure(v, workers, up.port, cp, version)
                    runs.append(row)
                    print(f"round {r} workers {workers}: " + "  ".join(
                        f"{v}={row[v]['rss'] / 1024:.1f} MiB (anon {row[v]['anon'] / 1024:.1f})" for v in variants), flush=True)
    finally:
        if cp:
            cp.stop()

    summary: dict = {}
    others = [v for v in variants if v != "a"]
    for part, title in (("rss", "VmRSS"), ("anon", "RssAnon (heaps, V8 code and VM memory)"), ("file", "RssFile (mapped code: Envoy's binary, the module)"),
                        ("allocated", "tcmalloc allocated (live heap)"), ("heap", "tcmalloc heap_size (what the allocator holds)")):
        print(f"\n{title} of the whole Envoy process, medians over rounds (deltas paired per round against a)")
        print(f"{'workers':>7} " + " ".join(f"{v + ' MiB':>8}" for v in variants) + " " + " ".join(f"{v + '-a MiB':>8}" for v in others)
              + " " + " ".join(f"{v + '/a':>6}" for v in others))
        for workers in args.workers:
            rows = [x for x in runs if x["workers"] == workers]
            med = {v: statistics.median(x[v][part] for x in rows) / 1024 for v in variants}
            delta = {v: statistics.median((x[v][part] - x["a"][part]) for x in rows) / 1024 for v in others}
            summary.setdefault(part, {})[workers] = {"mib": med, "minus_a_mib": delta}
            print(f"{workers:>7} " + " ".join(f"{med[v]:>8.1f}" for v in variants) + " " + " ".join(f"{delta[v]:>8.1f}" for v in others)
                  + " " + " ".join(f"{med[v] / med['a']:>6.2f}" for v in others))
        if len(args.workers) > 1:
            lo, hi = min(args.workers), max(args.workers)
            for v in others:
                per = (summary[part][hi]["minus_a_mib"][v] - summary[part][lo]["minus_a_mib"][v]) / (hi - lo)
                print(f"{v}: each extra worker adds {per:.1f} MiB over a's own per-worker growth")
    if args.out:
        meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()}
        args.out.write_text(json.dumps({"meta": meta, "runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
