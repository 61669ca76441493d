# Sourced by the project's scripts: tool locations, so that worker-build and wrangler
# never try to download anything.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/@esbuild/linux-x64/bin/esbuild"
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
# Wrangler's local trace store keeps every request's full URL, query string included (a
# GET pixel's raw email too): off (see edge-collector/wrangler.toml's [observability]).
export X_LOCAL_OBSERVABILITY=false
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
