// Runs a wasm32-wasip1 program in V8 through Node's WASI (`scripts/bench.sh
// pipeline-wasm`): the engine the Workers runtime (workerd) runs the collector's wasm in.
// Usage: node bench/wasi-run.mjs program.wasm [args...]   (ROUNDS passes through)
import { WASI } from 'node:wasi';
import { readFileSync } from 'node:fs';

const [file, ...args] = process.argv.slice(2);
const env = process.env.ROUNDS ? { ROUNDS: process.env.ROUNDS } : {};
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env });
const module = await WebAssembly.compile(readFileSync(file));
wasi.start(await WebAssembly.instantiate(module, wasi.getImportObject()));
