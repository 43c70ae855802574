#!/usr/bin/env bash
# Load benchmarks of a release build on PostgreSQL (see BENCHMARKS.md).
#
#   bench/run.sh            full run (about 9 minutes after the build), rewrites the generated section of BENCHMARKS.md
#   bench/run.sh --smoke    a few seconds per scenario, results to stdout only (CI)
#
# Other flags go to tessera-bench (`--help`). Needs PostgreSQL on 127.0.0.1:5432 (or
# TESSERA_BENCH_PG_URL, a database whose user may CREATE DATABASE) and `psql`; installs oha
# into /var/tmp/tessera-tools if missing. Everything runs on loopback and is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tessera-target}"
TOOLS="${TESSERA_TOOLS:-/var/tmp/tessera-tools}"
export TESSERA_BENCH_OHA="${TESSERA_BENCH_OHA:-$TOOLS/bin/oha}"
PG_URL="${TESSERA_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if ! [ -x "$TESSERA_BENCH_OHA" ]; then
    echo "==> installing oha into $TOOLS" >&2
    cargo install oha --locked --root "$TOOLS"
fi

if ! command -v psql >/dev/null; then
    echo "bench/run.sh: psql (PostgreSQL client) is required" >&2
    exit 1
fi
if ! psql "$PG_URL" -qAtXc 'select 1' >/dev/null 2>&1; then
    echo "bench/run.sh: PostgreSQL not reachable at $PG_URL" >&2
    exit 1
fi

echo "==> cargo build --release -p api -p bench" >&2
cargo build --release --locked -p api -p bench

export TESSERA_BENCH_COMMAND="bench/run.sh${*:+ $*}"
exec "$CARGO_TARGET_DIR/release/tessera-bench" \
    --tessera "$CARGO_TARGET_DIR/release/tessera" --pg-url "$PG_URL" "$@"
