#!/usr/bin/env python3
"""Runs a wasm32-wasip1 command module under Wasmtime (PyPI `wasmtime`, Cranelift, default
settings): the second wasm engine of bench/wasm-engine/run.py, next to V8 (Node).

    .venv/bin/python bench/wasm-engine/wasmtime_run.py FILE.wasm [ARGS...]

Passes ARGS as argv[1..] and CHUNKS from the environment (nothing else), inherits stdout and
stderr, and exits with the module's exit code. No preopened directories.
"""
import os
import sys

import wasmtime


def main() -> int:
    path, args = sys.argv[1], sys.argv[2:]
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, path)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [path, *args]
    if "CHUNKS" in os.environ:
        wasi.env = [("CHUNKS", os.environ["CHUNKS"])]
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as e:
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
