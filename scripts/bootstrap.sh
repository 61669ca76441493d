#!/usr/bin/env bash
# Installs everything Sightline needs to build and test, idempotently and only from the
# package registries (crates.io, npm, Debian). Fast when everything is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130
WORKER_BUILD_VERSION=0.8.7
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[bootstrap] %s\n' "$*"; }

# Rust: the wasm32 target (a no-op when installed).
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# The standard library's sources: the shipped SDK's wasm rebuilds core and alloc
# (scripts/build.sh says why).
if ! rustup component list --installed | grep -q '^rust-src'; then
  log "adding rust component rust-src"
  rustup component add rust-src || log "rust-src unavailable: the SDK is built with the standard core (larger)"
fi

# wasm-bindgen-cli must equal the wasm-bindgen library version exactly.
# No --locked: one locked dependency version is missing from the registry mirror.
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (takes a few minutes)"
  cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" --force
fi

if ! worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  log "installing worker-build $WORKER_BUILD_VERSION (takes a few minutes)"
  cargo install worker-build --version "=$WORKER_BUILD_VERSION" --locked --force
fi

# Chromium + chromedriver from Debian, for the wasm tests and the end-to-end tests.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver from apt"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# uBlock Origin's default filter lists as Debian ships them, for the ad-blocker tests
# (e2e/blockers.test.mjs).
if [ ! -f /usr/share/chromium/extensions/ublock-origin/assets/assets.json ]; then
  log "installing webext-ublock-origin-chromium from apt (its filter lists)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq webext-ublock-origin-chromium >/dev/null
fi

# The Python client libraries of the real-client tests (e2e/clients.test.mjs): Segment's,
# PostHog's and Snowplow's, in a venv of its own from PyPI.
if [ ! -x target/clients-venv/bin/python ] || ! target/clients-venv/bin/python -c 'import segment.analytics, posthog, snowplow_tracker' 2>/dev/null; then
  log "installing the Python client libraries into target/clients-venv"
  if ! python3 -m venv --help >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf target/clients-venv && mkdir -p target
  python3 -m venv target/clients-venv
  target/clients-venv/bin/pip install -q --disable-pip-version-check segment-analytics-python==2.4.0 \
    posthog==7.91.1 snowplow-tracker==1.1.0
fi

# Node side: Node 22, wrangler, esbuild, binaryen, playwright-core, pinned by package-lock.json.
# The lock also lists workerd's macOS/Windows binaries by version only (the registry here
# does not serve them, so npm cannot record them); `npm ci` requires those entries and
# never fetches them on Linux. Keep them when regenerating the lock.
# Re-run npm ci only when the lock file changed since the last install.
stamp=node_modules/.sightline-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
log "ok"
