"""Where a process's CPU went, from a `perf record` file: shares of the kernel, Envoy's own code
(V8's runtime and builtins included: the binary is stripped), the module's JIT-compiled wasm, and
everything else (libc, vdso). Shared by the benches' `--profile` options."""

from __future__ import annotations

import subprocess
from pathlib import Path


def dso_shares(data: Path) -> dict[str, float]:
    """Fractions of the samples in `data` per bucket: kernel, envoy, wasm_jit, other."""
    rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
                         capture_output=True, text=True).stdout
    buckets = {"kernel": 0.0, "envoy": 0.0, "wasm_jit": 0.0, "other": 0.0}
    for line in rep.splitlines():
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].endswith("%"):
            continue
        share, dso = float(parts[0][:-1]) / 100, parts[1].strip()
        key = ("kernel" if dso.startswith("[kernel") else "envoy" if dso == "envoy" else
               "wasm_jit" if dso.startswith("[JIT]") else "other")
        buckets[key] += share
    return buckets
