#!/usr/bin/env bash
# Benchmarks (never part of `make test`; figures are ratios measured in one run).
#   scripts/bench.sh validator   tracking-plan validator vs the jsonschema crate:
#                                wasm bytes (gzip -9) and native events/s on one core
#   scripts/bench.sh sdk         the browser SDK beside Segment, RudderStack, Snowplow,
#                                PostHog and Jitsu in ../shared/peer-bench (same run),
#                                plus the SDK's gzip -9 sizes, the wasm's by crate
#   scripts/bench.sh pii         the shared PII walker on adversarial strings of 7 KB,
#                                70 KB and 700 KB: time per scrub and its growth (linear)
#   scripts/bench.sh load        the collector in wrangler dev under browser and server
#                                traffic for 60 s: requests/s, events/s, latency, errors
#   scripts/bench.sh worker      the collector's wasm: bytes raw and gzip, code by crate
#   scripts/bench.sh pipeline    the collector's core pipeline (every step, in-memory
#                                stores) vs a bare serde_json parse+serialize of the
#                                same 20-event batches, events/s on one core
#   scripts/bench.sh pipeline-wasm  the same, compiled to wasm (wasm32-wasip1) and run
#                                in V8 (Node's WASI), as the worker runs it: no SHA
#                                instructions, wasm's allocator
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

gz() { gzip -9c "$1" | wc -c; }

bench_validator() {
  cd bench/validator
  local base_size=0
  printf '%-12s %14s %14s %16s\n' variant "wasm gz bytes" "added gz" "native events/s"
  # sightline: as the SDK ships it (browser RegExp); sightline-lite: as the collector
  # runs it (regex-lite). wasm-opt for all; wasm-bindgen for the one that imports from JS.
  for variant in parse-only sightline sightline-lite jsonschema; do
    local feat=()
    case $variant in
      sightline) feat=(--features compact) ;;
      sightline-lite) feat=(--features compact-regex-lite) ;;
      jsonschema) feat=(--features jsonschema) ;;
    esac
    cargo build -q --release --lib --target wasm32-unknown-unknown "${feat[@]}"
    local wasm=target/wasm32-unknown-unknown/release/validator_bench.wasm
    if [ "$variant" = sightline ]; then
      wasm-bindgen --target web --out-dir target/bindgen --out-name "$variant" "$wasm"
      wasm="target/bindgen/${variant}_bg.wasm"
    fi
    wasm-opt -Oz --strip-debug --strip-producers "$wasm" -o "target/$variant.wasm"
    local size; size=$(gz target/$variant.wasm)
    [ "$variant" = parse-only ] && base_size=$size
    local speed; speed=$(taskset -c 0 cargo run -q --profile bench-speed --bin validator-bench "${feat[@]}" | cut -f2)
    printf '%-12s %14s %14s %16s\n' "$variant" "$size" "$((size - base_size))" "$speed"
  done
}

bench_pipeline() {
  cargo build -q --profile bench-speed -p edge-collector --example pipeline_bench
  taskset -c 0 target/bench-speed/examples/pipeline_bench "${BATCHES:-5000}"
}

bench_pipeline_wasm() {
  rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
  cargo build -q --profile bench-speed -p edge-collector --example pipeline_bench --target wasm32-wasip1
  node --no-warnings bench/wasi-run.mjs \
    target/wasm32-wasip1/bench-speed/examples/pipeline_bench.wasm "${BATCHES:-2000}"
}

bench_pii() {
  cargo build -q --profile bench-speed -p tracking-plan --example pii_scaling
  taskset -c 0 target/bench-speed/examples/pii_scaling
}

bench_sdk() {
  scripts/build.sh sdk
  echo "SDK gzip -9 bytes:"
  local total=0
  for f in snippet.min.js sightline.js sightline.wasm; do
    local n; n=$(gz "sdk-wasm/dist/$f")
    total=$((total + n))
    printf '  %-16s %6s\n' "$f" "$n"
  done
  printf '  %-16s %6s (budget 29000)\n' total "$total"
  # What each crate costs: the module again with its function names kept.
  wasm-opt -Oz -g sdk-wasm/pkg/sdk_wasm_bg.wasm -o target/sightline-named.wasm
  echo "sightline.wasm by crate (wasm-opt -Oz, names kept):"
  node scripts/wasm-crates.mjs target/sightline-named.wasm sdk_wasm
  # peer-bench lives outside the repository; it runs from a copy with its own packages.
  local src="${PEER_BENCH:-$ROOT/../shared/peer-bench}"
  local work="$ROOT/target/peer-bench"
  if [ ! -d "$work/node_modules" ]; then
    rm -rf "$work" && mkdir -p "$work"
    cp -r "$src"/. "$work"/
    (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  (cd "$work" && SIGHTLINE_DIST="$ROOT/sdk-wasm/dist" node bench.mjs \
    --entries "$ROOT/bench/peer-bench/sightline.mjs" "$@")
}

bench_load() {
  scripts/build.sh worker
  node bench/load.mjs
}

bench_worker() {
  touch edge-collector/src/lib.rs && scripts/build.sh worker
  local w=edge-collector/build/index_bg.wasm
  echo "collector wasm: $(wc -c < "$w") bytes raw, $(gz "$w") gzip -9"
  node scripts/wasm-crates.mjs target/collector-named.wasm edge_collector
}

case "${1:-}" in
  validator) bench_validator ;;
  pipeline) bench_pipeline ;;
  pipeline-wasm) bench_pipeline_wasm ;;
  pii) bench_pii ;;
  worker) bench_worker ;;
  load) bench_load ;;
  sdk) shift; bench_sdk "$@" ;;
  *) echo "usage: $0 validator|pii|pipeline|pipeline-wasm|worker|load|sdk [peer-bench options]" >&2; exit 2 ;;
esac
