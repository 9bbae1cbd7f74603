// Runs a wasm32-wasip1 command module under Node's WASI (V8, the engine Envoy embeds).
//
//   node --no-liftoff --no-warnings bench/wasm-engine/wasi-run.mjs FILE.wasm [ARGS...]
//
// Passes ARGS as argv[1..] and CHUNKS from the environment (nothing else), inherits stdout and
// stderr, and exits with the module's exit code. No preopened directories: the module gets no
// file system access.
import { readFile } from "node:fs/promises";
import process from "node:process";
import { WASI } from "node:wasi";

const [path, ...args] = process.argv.slice(2);
const env = {};
if (process.env.CHUNKS !== undefined) env.CHUNKS = process.env.CHUNKS;
const wasi = new WASI({ version: "preview1", args: [path, ...args], env, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(path));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
