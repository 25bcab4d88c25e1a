#!/usr/bin/env bash
# Runs the dashboard's browser test: a real `weir demo` driven by headless Chromium.
# Installs what is missing (Debian's chromium, node, playwright-core via npm ci) and
# builds the `weir` binary; fast when everything is already there. Idempotent.
#
#   web/tests/browser/run.sh            # build weir (debug) if needed, run the test
#   WEIR_BIN=/path/to/weir run.sh       # test that binary instead, no build
#   CHROMIUM=/path/to/chromium run.sh   # another Chromium
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

apt_install() {
  "$repo/scripts/apt-install.sh" "$@"
}

# 1. Chromium and node.
if [ ! -x "$CHROMIUM" ]; then
  [ "$CHROMIUM" = /usr/bin/chromium ] || { echo "run.sh: CHROMIUM=$CHROMIUM is not executable" >&2; exit 1; }
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "run.sh: node $node_major is too old; the test needs node 18 or newer" >&2
  exit 1
fi

# 2. playwright-core, exactly as locked. Reinstall only when the lock file changed.
stamp="$here/node_modules/.weir-lock-stamp"
if [ ! -f "$stamp" ] || ! cmp -s "$here/package-lock.json" "$stamp"; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stamp"
fi

# 3. The binary (cargo is a no-op when it is up to date).
if [ -z "${WEIR_BIN:-}" ]; then
  (cd "$repo" && cargo build --quiet -p weir-web --bin weir ${WEIR_CARGO_FEATURES:-})
  export WEIR_BIN="$CARGO_TARGET_DIR/debug/weir"
fi

# 4. The test.
cd "$here"
exec node --test --test-concurrency=1 --test-reporter=spec dashboard.test.mjs
