#!/usr/bin/env bash
# What PostgreSQL spends per refresh, for two versions of the refresh statement
# (`service::auth::REFRESH_POSTGRES_SQL`): the one at a git revision and the one in the working
# tree, replayed with pgbench on one freshly migrated database, in alternating runs, the CPU of
# pgbench's backends read from /proc while each run is under way.
#
#   bench/experiments/pg-refresh.sh [REV] [PAIRS] [SECONDS]   (defaults: HEAD~1, 5 pairs, 7 s each)
#
# Each transaction presents a stored, unused token of its client's session (16 clients, 16
# sessions, one user) and stores the successor, as a refresh does; the session's recorded IP,
# user agent and last sign of life are current, so no run has a last-seen update to make. The
# parameters are replaced by literals in the order the constant's doc comment gives ($1 now,
# $2 the presented hash, $3 IP, $4 user agent, $5 successor id, $6 its hash, $7 its expiry,
# $8 the last-seen cutoff): a version with other parameters needs this script changed too.
# On a noisy VM the same statement's cost moves by a fifth between runs a minute apart, which is
# why the two alternate and each pair is printed. An experiment record, not part of CI. Needs
# the release build (for the migrations), psql and pgbench.
set -euo pipefail
cd "$(dirname "$0")/../.."

REV="${1:-HEAD~1}"
PAIRS="${2:-5}"
SECS="${3:-7}"
CLIENTS=16
PER_RUN=6000                      # tokens per client and run: more than a run can present
DB_PREFIX=tessera_pg_refresh
# shellcheck source=bench/experiments/common.sh
. bench/experiments/common.sh

statement() { # the constant's SQL from a file's text on stdin
    sed -n '/pub const REFRESH_POSTGRES_SQL: &str = r#"/,/"#;/p' | sed '1s/.*r#"//; $s/"#;//'
}
git show "$REV:service/src/auth.rs" | statement >"$WORK/before.sql"
statement <service/src/auth.rs >"$WORK/after.sql"
[ -s "$WORK/before.sql" ] && [ -s "$WORK/after.sql" ] || { echo "REFRESH_POSTGRES_SQL not found" >&2; exit 1; }

script() { # pgbench script: the statement with its parameters as literals, one line
    echo '\set k :k + 1'
    echo '\set n :client_id * 1000000 + 1000000 + :k'
    sed -e "s/\\\$1/now()/g" -e "s/\\\$2/('h' || :n)/g" -e "s/\\\$3/'127.0.0.1'/g" \
        -e "s/\\\$4/'pgbench'/g" -e "s/\\\$5/gen_random_uuid()/g" \
        -e "s/\\\$6/md5(random()::text) || md5(random()::text)/g" \
        -e "s/\\\$7/(now() + interval '30 days')/g" -e "s/\\\$8/(now() - interval '1 minute')/g" \
        "$1" | tr '\n' ' '
    echo ';'
}
script "$WORK/before.sql" >"$WORK/before.pgb"
script "$WORK/after.sql" >"$WORK/after.pgb"

fresh_database
sid() { echo "('00000000-0000-7000-8000-' || lpad(($1)::text, 12, '0'))::uuid"; }
psql "$DB_URL" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (id, email, password_hash, display_name, metadata, created_at, updated_at)
    VALUES ($(sid 999999), 'u@example.com', 'x', 'U', '{}', now(), now());
INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, ip, user_agent, mfa_level)
    SELECT $(sid c), $(sid 999999), now(), now() + interval '1 day', now() + interval '30 days',
           '127.0.0.1', 'pgbench', 0
    FROM generate_series(0, $((CLIENTS - 1))) c;
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)
    SELECT gen_random_uuid(), $(sid c), 'h' || ((c + 1) * 1000000 + k), now(), now() + interval '30 days'
    FROM generate_series(0, $((CLIENTS - 1))) c, generate_series(1, $((PAIRS * 2 * PER_RUN))) k;
VACUUM ANALYZE;
SQL

# Refreshes committed so far (exact, unlike pg_stat_database's counters, which lag up to a second).
commits() { psql "$DB_URL" -qAtXc "SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL"; }
measure() { # label, script, first token number of this run
    pgbench "$DB_URL" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" -D k="$3" -f "$2" \
        >"$WORK/pgbench.out" 2>&1 &
    local bench=$!
    BACKGROUND=("$bench")
    sleep 1.5 & wait $!
    local pids
    pids=$(pgbench_backends "$CLIENTS")
    # shellcheck disable=SC2086 # one PID per word
    ticks() { cpu_ticks $pids; }
    local t0 c0 t1 c1
    t0=$(ticks); c0=$(commits)
    sleep $((SECS - 3)) & wait $!
    t1=$(ticks); c1=$(commits)
    wait "$bench" || { cat "$WORK/pgbench.out" >&2; exit 1; }
    BACKGROUND=()
    awk -v l="$1" -v t=$((t1 - t0)) -v c=$((c1 - c0)) -v hz="$HZ" -v s=$((SECS - 3)) 'BEGIN {
        printf "  %-26s %6.0f refreshes/s  %.3f ms of backend CPU per refresh\n", l, c / s, t * 1000 / hz / c }'
}

echo "pgbench -M prepared, $CLIENTS clients, ${SECS} s runs; $(nproc) cores, $(psql "$PG" -qAtXc 'SHOW server_version')"
for pair in $(seq 1 "$PAIRS"); do
    echo "pair $pair"
    measure "$REV" "$WORK/before.pgb" $(((pair - 1) * 2 * PER_RUN))
    measure "working tree" "$WORK/after.pgb" $(((pair - 1) * 2 * PER_RUN + PER_RUN))
done
used=$(psql "$DB_URL" -qAtXc "SELECT count(*) FILTER (WHERE used_at IS NOT NULL) || ' claimed, ' || count(*) FILTER (WHERE parent_id IS NOT NULL) || ' successors' FROM refresh_tokens")
echo "tokens: $used (equal when every claim stored its successor)"
