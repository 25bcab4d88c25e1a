#!/usr/bin/env bash
# Runs real clients against a real `weir demo`: psql (Debian's
# postgresql-client), psycopg, SQLAlchemy and ADBC's Flight SQL driver (PyPI).
# Installs what is missing and builds the `weir` binary; fast when everything
# is already there.
#
#   web/tests/clients/run.sh                 # build weir (debug) if needed, run the clients
#   WEIR_BIN=/path/to/weir run.sh       # test that binary instead, no build
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

# 1. psql.
if ! command -v psql >/dev/null; then
  "$repo/scripts/apt-install.sh" postgresql-client
fi

# 2. The Python clients, pinned.
if ! python3 -c 'import psycopg, sqlalchemy, adbc_driver_flightsql.dbapi, pyarrow' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

# 3. The binary (cargo is a no-op when it is up to date).
if [ -z "${WEIR_BIN:-}" ]; then
  (cd "$repo" && cargo build --quiet -p weir-web --bin weir ${WEIR_CARGO_FEATURES:-})
  export WEIR_BIN="$CARGO_TARGET_DIR/debug/weir"
fi

# 4. The clients.
exec python3 "$here/clients.py"
