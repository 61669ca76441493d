#!/usr/bin/env bash
# The property tests with fresh random seeds and many cases (default 20,000 each), in
# release mode: what `make test` runs as a fixed sequence, explored further. A failure
# is saved to the test's .proptest-regressions file, which `make test` then replays.
#   scripts/fuzz.sh [cases]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
unset PROPTEST_RNG_SEED
export PROPTEST_CASES="${1:-20000}"
cargo test --release --quiet -p tracking-plan --lib time
cargo test --release --quiet -p tracking-plan --test identifiers --test json_text --test plan
cargo test --release --quiet -p edge-collector --lib pipeline::split
cargo test --release --quiet -p edge-collector --test guarantees --test identity --test identity_shards --test ingest
