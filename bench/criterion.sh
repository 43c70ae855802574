#!/usr/bin/env bash
# In-process benchmarks (criterion) of the per-request crypto, each beside its raw ceiling
# measured in the same run; rewrites the in-process section of BENCHMARKS.md (see there).
#
#   bench/criterion.sh              all of service/benches/hot_paths.rs (about 2 minutes after the build)
#
# Only this run's results are reported: criterion's output directory is emptied first.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tessera-target}"
export CRITERION_HOME="$CARGO_TARGET_DIR/criterion"   # where criterion writes its results
rm -rf "$CRITERION_HOME"
echo "==> cargo bench -p service --bench hot_paths" >&2
cargo bench --locked -p service --bench hot_paths
echo "==> cargo build --release -p bench" >&2
cargo build --release --locked -p bench
TESSERA_BENCH_COMMAND="bench/criterion.sh" \
    exec "$CARGO_TARGET_DIR/release/tessera-bench" --criterion "$CRITERION_HOME"
