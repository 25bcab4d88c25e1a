#!/usr/bin/env bash
# Runs every test of Weir. Needs only the Rust toolchain.
#
# The cargo target directory lives outside the checkout ($HOME/.cache/weir-target
# unless CARGO_TARGET_DIR says otherwise) so that later runs build incrementally.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== building (target dir: $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked
echo "== testing"
status=0
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log" || status=$?
# One closing line over every test binary: "tests: N passed, N failed".
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
