#!/usr/bin/env bash
# Load benchmarks of a release build on PostgreSQL (see BENCHMARKS.md).
#
#   bench/run.sh            full run (about 8 minutes after the build), rewrites the generated section of BENCHMARKS.md
#   bench/run.sh --smoke    a few seconds per scenario, results to stdout only (CI)
#
# Other flags go to tessera-bench (`--help`). Runs its own PostgreSQL cluster (needs the server
# binaries under /usr/lib/postgresql), or uses TESSERA_BENCH_PG_URL, a server whose user may
# CREATE DATABASE; installs oha into /var/tmp/tessera-tools if missing. Everything runs on
# loopback and is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tessera-target}"
TOOLS="${TESSERA_TOOLS:-/var/tmp/tessera-tools}"
export TESSERA_BENCH_OHA="${TESSERA_BENCH_OHA:-$TOOLS/bin/oha}"

# The load tool's version is part of what a result means (the report names it): the one this
# script installs is pinned, and reinstalled when $TOOLS holds another. An oha given through
# TESSERA_BENCH_OHA is used as it is.
OHA_VERSION=1.16.0
if [ "$TESSERA_BENCH_OHA" = "$TOOLS/bin/oha" ] &&
    [ "$("$TESSERA_BENCH_OHA" --version 2>/dev/null)" != "oha $OHA_VERSION" ]; then
    echo "==> installing oha $OHA_VERSION into $TOOLS" >&2
    cargo install oha --version "$OHA_VERSION" --locked --force --root "$TOOLS"
elif ! [ -x "$TESSERA_BENCH_OHA" ]; then
    echo "bench/run.sh: no oha at TESSERA_BENCH_OHA=$TESSERA_BENCH_OHA" >&2
    exit 1
fi

# Measurements need the release build. CI's smoke (numbers not judged) sets
# TESSERA_BENCH_PROFILE=dev: the workspace's debug build with all targets has the feature set of
# the test build just before it, so on a fresh machine it reuses those compiled dependencies
# instead of spending ~10 minutes on an optimized build.
case "${TESSERA_BENCH_PROFILE:-release}" in
    release)
        echo "==> cargo build --release -p api -p bench" >&2
        cargo build --release --locked -p api -p bench
        BIN="$CARGO_TARGET_DIR/release"
        ;;
    dev)
        echo "==> cargo build --workspace --all-targets (debug build: smoke only)" >&2
        cargo build --locked --workspace --all-targets
        BIN="$CARGO_TARGET_DIR/debug"
        ;;
    *)
        echo "bench/run.sh: TESSERA_BENCH_PROFILE must be release or dev" >&2
        exit 2
        ;;
esac

export TESSERA_BENCH_COMMAND="bench/run.sh${*:+ $*}"
exec "$BIN/tessera-bench" --tessera "$BIN/tessera" "$@"
