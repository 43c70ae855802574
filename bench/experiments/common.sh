# Shared by the experiment scripts beside it (sourced, not run): the benchmark database's name
# and URL, a work directory, cleanup on exit or Ctrl-C, and the tools they all need. The caller
# sets DB_PREFIX first and puts the PIDs of what it starts in the background into BACKGROUND.

PG="${TESSERA_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
TESSERA="${TESSERA_BIN:-${CARGO_TARGET_DIR:-/var/tmp/tessera-target}/release/tessera}"
DB="${DB_PREFIX}_$$"
PG_BASE="${PG%%\?*}"              # the URL without its query string (?sslmode=…), kept apart
DB_URL="${PG_BASE%/*}/$DB${PG#"$PG_BASE"}"
WORK="$(mktemp -d)"
HZ="$(getconf CLK_TCK)"
BACKGROUND=()
cleanup() {
    [ ${#BACKGROUND[@]} -eq 0 ] || kill "${BACKGROUND[@]}" 2>/dev/null || true
    psql "$PG" -qXc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$TESSERA" ] || { echo "no release build at $TESSERA (cargo build --release -p api)" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "pgbench is required" >&2; exit 1; }

# A freshly migrated, empty database $DB.
fresh_database() {
    psql "$PG" -qXc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" \
        >/dev/null 2>&1
    DATABASE_URL="$DB_URL" "$TESSERA" migrate up >"$WORK/migrate.log" 2>&1 ||
        { cat "$WORK/migrate.log" >&2; exit 1; }
}

# The PIDs of pgbench's backends on $DB, checked to be $1 of them.
pgbench_backends() {
    local pids
    pids=$(psql "$PG" -qAtXc "SELECT pid FROM pg_stat_activity WHERE datname = '$DB' AND application_name = 'pgbench'")
    if [ "$(echo "$pids" | grep -c .)" -ne "$1" ]; then
        echo "expected $1 pgbench backends, found: $pids" >&2
        cat "$WORK/pgbench.out" >&2 2>/dev/null || true
        exit 1
    fi
    echo "$pids"
}

# CPU ticks (user + system) used so far by the processes given as arguments.
cpu_ticks() {
    local t=0 p
    for p in "$@"; do set -- $(cut -d' ' -f14,15 "/proc/$p/stat"); t=$((t + $1 + $2)); done
    echo "$t"
}
