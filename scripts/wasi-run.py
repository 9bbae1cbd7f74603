#!/usr/bin/env python3
"""Cargo runner for wasm32-wasip1 test binaries: runs the same libtest harness as native, compiled
to wasm, under Wasmtime (PyPI `wasmtime`, installed in the project virtualenv).

Why this and not wasm-bindgen-test: the filter ships as wasm32-wasip1, and wasm-bindgen-test
targets wasm32-unknown-unknown with JS glue; running the unchanged `#[test]`s on the shipping
target checks the code that Envoy's V8 will run (integer widths, no threads, WASI clock/random).
"""
import sys

import wasmtime


def main() -> int:
    path, args = sys.argv[1], sys.argv[1:]
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, path)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    # wasm has no threads: libtest must run tests one at a time.
    wasi.argv = args + ([] if any(a.startswith("--test-threads") for a in args) else ["--test-threads=1"])
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    wasi.inherit_env()
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as e:
        return e.code
    except wasmtime.Trap as e:
        print(f"wasm trap (a failed test aborts: panic=abort on wasm): {e}", file=sys.stderr)
        return 101
    return 0


if __name__ == "__main__":
    sys.exit(main())
