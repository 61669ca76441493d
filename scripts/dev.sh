#!/usr/bin/env bash
# Command 1: builds everything and runs the whole system locally: the collector in
# workerd (wrangler dev) with local D1, serving the example site and the SDK first-party.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
source scripts/env.sh
scripts/build.sh sdk
scripts/build.sh site
PORT="${PORT:-8787}"
STATE="$ROOT/.wrangler/state"   # local D1 lives here and persists across restarts
ADMIN_TOKEN="${ADMIN_TOKEN:-sl_dev_admin}"
cd edge-collector
wrangler d1 migrations apply DB --local --persist-to "$STATE" >/dev/null
cat <<TXT

  Sightline is starting (the worker builds first, then wrangler prints "Ready").
  Example site:  http://127.0.0.1:$PORT/   (accept the consent banner; try the newsletter form)
  Collector:     POST http://127.0.0.1:$PORT/v1/batch   (write keys: sl_dev_key for the site,
                 sl_server_key for back-end libraries)
  Inspector:     http://127.0.0.1:$PORT/admin/   (sign in with the admin token: $ADMIN_TOKEN)
  Admin API:     curl -H 'Authorization: Bearer $ADMIN_TOKEN' http://127.0.0.1:$PORT/admin/v1/events
                 .../admin/v1/stats, .../admin/v1/quarantine, .../admin/v1/profiles?anonymousId=...
  Segments:      .../admin/v1/segments, .../admin/v1/deliveries (Meta, Google and webhook
                 stand-ins on http://127.0.0.1:8790 print what they receive)
                 .../admin/v1/audiences/returning-customer.csv?writeKey=sl_dev_key&format=meta
  Local D1:      $STATE
                 (cd edge-collector && npx wrangler d1 execute DB --local --persist-to $STATE \\
                    --command 'select type, event, anonymous_id, received_at from events')

TXT
# Local STAND-INS for Meta's Conversions API, Google's Data Manager API and a webhook
# receiver (the real endpoints are not reachable from a dev machine): they check each
# delivery's documented format and print what they received.
node "$ROOT/e2e/standins.mjs" 8790 &
STANDINS=$!
trap 'kill $STANDINS 2>/dev/null || true' EXIT
wrangler dev --ip 127.0.0.1 --port "$PORT" --persist-to "$STATE" \
  --var "ADMIN_TOKEN:$ADMIN_TOKEN" --show-interactive-dev-session=false \
  --var META_TOKEN:dev_meta_token --var GOOGLE_TOKEN:dev_google_token --var HOOK_SECRET:dev_hook_secret
