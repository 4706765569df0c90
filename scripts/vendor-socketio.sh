#!/usr/bin/env bash
# Copy the official socket.io-client browser bundle from npm into hub/static, for the
# playground page (served by the hub itself: no CDN, works offline).
#   bash scripts/vendor-socketio.sh
# The version is the one pinned in tests/js/package.json (and its package-lock.json);
# tests/test_playground.py fails when the vendored copy differs from that npm package.
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

PACKAGE=tests/js/node_modules/socket.io-client
install -m 0644 "$PACKAGE/dist/socket.io.min.js" hub/static/socket.io.min.js
install -m 0644 "$PACKAGE/LICENSE" hub/static/socket.io-client.LICENSE
version=$(node -p "require('./$PACKAGE/package.json').version")
echo "hub/static/socket.io.min.js: socket.io-client $version"
