#!/usr/bin/env bash
# Runs every test of Weir: the Rust workspace (unit, property and end-to-end tests
# against the real binary), the deployment files, the dashboard in headless
# Chromium, and real Postgres clients. Needs only the Rust toolchain; installs the
# rest (Debian's chromium, postgresql-client, cmake and libcurl headers, node and
# playwright-core from npm, kubernetes-validate, moto's S3 server, psycopg and
# SQLAlchemy from PyPI, the tansu Kafka broker from crates.io) when missing. The
# Kafka source is built and tested (`--features weir-web/kafka`).
#
# The cargo target directory lives outside the checkout ($HOME/.cache/weir-target
# unless CARGO_TARGET_DIR says otherwise) so that later runs build incrementally.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0

echo "== librdkafka's bundled build needs cmake and the libcurl headers (Debian)"
if ! command -v cmake >/dev/null 2>&1 || ! dpkg -s libcurl4-openssl-dev >/dev/null 2>&1; then
  scripts/apt-install.sh cmake libcurl4-openssl-dev
fi

echo "== the Kafka-protocol broker the Kafka tests start (tansu, built once under \$HOME)"
tansu_root="${TANSU_ROOT:-$HOME/.local/tansu}"
if [ ! -x "$tansu_root/bin/tansu" ]; then
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$tansu_root"
fi
export WEIR_TANSU="$tansu_root/bin/tansu"

features=(--features weir-web/kafka)
export WEIR_CARGO_FEATURES="--features weir-web/kafka"   # web/tests/browser/run.sh builds the same binary
echo "== building (target dir: $CARGO_TARGET_DIR)"
# A debug build with its tests needs about 10 GB more when much changed; the
# incremental caches are the part that is cheap to rebuild, so they go first.
mkdir -p "$CARGO_TARGET_DIR"
free_kb="$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')"
if [ "$free_kb" -lt $((12 * 1024 * 1024)) ] && [ -d "$CARGO_TARGET_DIR/debug/incremental" ]; then
  echo "only $((free_kb / 1024 / 1024)) GB free: removing $CARGO_TARGET_DIR/debug/incremental"
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
fi
cargo build --workspace --all-targets --locked "${features[@]}"

echo "== formatting (rustfmt.toml) and lints (clippy, warnings are errors)"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo fmt --all --check 2>&1 | tee -a "$log" || status=1
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings 2>&1 | tail -n 40 || status=1

echo "== the S3-compatible server the cold-tier tests start (moto, from PyPI)"
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]' >/dev/null
fi
command -v moto_server

echo "== Rust tests"
cargo test --workspace --locked --no-fail-fast "${features[@]}" -- --test-threads=2 2>&1 | tee -a "$log" || status=$?

echo "== deployment files"
deploy/validate.sh 2>&1 | tee -a "$log" || status=$?

echo "== the dashboard in headless Chromium"
# Screenshots of this run go to a temporary directory; `web/tests/browser/run.sh`
# alone refreshes the ones in docs/screenshots/.
shots="$(mktemp -d)"
WEIR_SCREENSHOTS="$shots" web/tests/browser/run.sh 2>&1 | tee -a "$log" || status=$?
rm -rf "$shots"

echo "== SQL clients: psql, psycopg, SQLAlchemy, ADBC Flight SQL (installed when missing)"
web/tests/clients/run.sh 2>&1 | tee -a "$log" || status=$?

# One closing line over every runner: "tests: N passed, N failed".
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^ℹ pass [0-9]+$/ { p += $3 }
     /^ℹ fail [0-9]+$/ { f += $3 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
