#!/usr/bin/env bash
# Builds the SDK (wasm + JS glue + snippet), assembles the site, and builds the worker.
# Usage: scripts/build.sh [sdk|site|worker|all]   (default: all)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

# The shipped SDK's wasm is built with `core` and `alloc` compiled again (rust-src) so
# that a panic is a bare trap: no panic message formatting, no source locations, no
# `Debug` output. The wasm has no use for them (a panic already traps, and nothing reads
# a message), and they were 3,871 bytes gzip of every visitor's download (54,558 ->
# 50,687, measured). Those are unstable compiler options, enabled on this stable
# toolchain by RUSTC_BOOTSTRAP for this one build, in a target directory of its own; if
# they ever stop building, the SDK is built as before (and says so).
SDK_TARGET=target/sdk-min
sdk_cargo() {
  if RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$SDK_TARGET \
      RUSTFLAGS="--cfg=web_sys_unstable_apis -Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=none -Csymbol-mangling-version=legacy" \
      cargo build -q -p sdk-wasm --target wasm32-unknown-unknown --release -Zbuild-std=core,alloc "$@" 2>/dev/null; then
    return
  fi
  echo "[build] sdk: core cannot be rebuilt here; building with the standard core (larger)" >&2
  CARGO_TARGET_DIR=$SDK_TARGET cargo build -q -p sdk-wasm --target wasm32-unknown-unknown --release "$@"
}

build_sdk() {
  echo "[build] sdk"
  rm -rf sdk-wasm/pkg sdk-wasm/dist && mkdir -p sdk-wasm/dist
  # The inspector's hashing: the engine with one more export, in a wasm of its own so
  # that visitors do not download it (never loaded by sites).
  sdk_cargo --features no-std,inspector
  rm -rf sdk-wasm/pkg-inspector
  wasm-bindgen --target web --no-typescript --out-dir sdk-wasm/pkg-inspector \
    $SDK_TARGET/wasm32-unknown-unknown/release/sdk_wasm.wasm
  wasm-opt -Oz --strip-debug --strip-producers --strip-target-features \
    sdk-wasm/pkg-inspector/sdk_wasm_bg.wasm -o sdk-wasm/dist/sightline-hash.wasm
  esbuild sdk-wasm/js/hash.js --bundle --minify --format=esm --target=es2020 \
    --log-override:empty-import-meta=silent --log-level=warning \
    --outfile=sdk-wasm/dist/sightline-hash.mjs
  sdk_cargo --features no-std
  wasm-bindgen --target web --no-typescript --out-dir sdk-wasm/pkg \
    $SDK_TARGET/wasm32-unknown-unknown/release/sdk_wasm.wasm
  # --low-memory-unused: loads and stores fold their constant offsets, as nothing lives
  # in the first 1 KB of memory (Rust's stack is the first megabyte, growing down from
  # its top; data follows it). Emscripten passes it for the same layout. 319 bytes gzip
  # less of the shipped wasm (measured).
  wasm-opt -Oz --converge --low-memory-unused --strip-debug --strip-producers --strip-target-features \
    sdk-wasm/pkg/sdk_wasm_bg.wasm -o sdk-wasm/dist/sightline.wasm
  # The glue in pkg/ is rewritten in place to the shipped wasm's short names (pkg's own
  # wasm keeps the long ones, for scripts/bench.sh's per-crate table), then bundled.
  node scripts/minify-boundary.mjs sdk-wasm/dist/sightline.wasm sdk-wasm/pkg/sdk_wasm.js
  # The glue's default wasm URL (import.meta.url) is never used: the shim passes the
  # snippet's early fetch. The banner is V8's compile hint: the whole script is compiled
  # while it loads, not function by function on first call (about 3 ms less load+init
  # in Chromium, measured; other browsers read a comment).
  esbuild sdk-wasm/js/sightline.js --bundle --minify --format=iife --target=es2020 \
    --banner:js='//# allFunctionsCalledOnLoad' \
    --log-override:empty-import-meta=silent --log-level=warning --outfile=sdk-wasm/dist/sightline.js
  esbuild sdk-wasm/js/snippet.js --minify --target=es2015 --log-level=warning \
    --outfile=sdk-wasm/dist/snippet.min.js
  cp sdk-wasm/js/sightline.d.ts sdk-wasm/dist/ 2>/dev/null || true
}

build_site() {
  node scripts/assemble-site.mjs
}

build_worker() {
  # Incremental: worker-build re-runs wasm-opt (~15 s) even when cargo has nothing to do,
  # and wrangler dev runs this step on every start.
  local out=edge-collector/build/index_bg.wasm
  if [ -f "$out" ] && [ -z "$(find edge-collector/src edge-collector/inspector edge-collector/Cargo.toml tracking-plan/src \
      tracking-plan/Cargo.toml Cargo.toml Cargo.lock -newer "$out" -print -quit)" ]; then
    echo "[build] worker up to date"
    return
  fi
  echo "[build] worker"
  (cd edge-collector && worker-build --release >/dev/null)
  # worker-build keeps the function-name section (241 KB); what is deployed goes without.
  # The named copy is for `scripts/bench.sh worker` (what each crate costs).
  mkdir -p target && cp "$out" target/collector-named.wasm
  wasm-opt --strip-debug --enable-bulk-memory --enable-reference-types --enable-sign-ext \
    --enable-mutable-globals --enable-nontrapping-float-to-int --enable-multivalue \
    --enable-exception-handling "$out" -o "$out"
}

case "${1:-all}" in
  sdk) build_sdk ;;
  site) build_site ;;
  worker) build_worker ;;
  all) build_sdk; build_site; build_worker ;;
  *) echo "usage: $0 [sdk|site|worker|all]" >&2; exit 2 ;;
esac
