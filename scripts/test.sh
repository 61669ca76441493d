#!/usr/bin/env bash
# Command 2: installs what is missing, then runs every test: native Rust tests, the wasm
# tests in headless Chromium, and the end-to-end tests (example site in Chromium → SDK →
# collector in workerd → local D1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
source scripts/env.sh

echo "== native tests"
# The property tests run a fixed sequence here (after their saved regressions), so a
# run is reproducible and a landing is not decided by a draw; scripts/fuzz.sh explores
# fresh seeds with many more cases.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261202}"
cargo test --workspace --quiet

echo "== wasm tests in headless Chromium"
cargo test --target wasm32-unknown-unknown -p tracking-plan --test wasm
# Again with the browser's RegExp as the `pattern` engine, as the SDK builds it.
cargo test --target wasm32-unknown-unknown -p tracking-plan --test wasm --features js-regex
# The SDK engine's tests, compiled to wasm (they also ran natively above).
cargo test --target wasm32-unknown-unknown -p sdk-wasm --test engine

echo "== build"
scripts/build.sh all

echo "== end-to-end tests"
rm -rf target/e2e-state   # every collector state of this run, scanned by the last test
npm run --silent e2e
