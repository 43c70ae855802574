#!/usr/bin/env bash
# What PostgreSQL spends per sign-in, without the server: the two statements a sign-in sends on
# PostgreSQL (the lookup by email, then the sign-in CTE of `service::auth::SIGN_IN_POSTGRES_SQL`:
# conditional user update + session + refresh token + audit event), replayed with pgbench at a
# sign-in rate like the login benchmark's, the CPU of pgbench's backends read from /proc.
#
#   bench/experiments/pg-sign-in.sh [RATE] [SECONDS]      (defaults: 280 sign-ins/s, 18 s measured)
#
# Environment (optional): PREFILL_USERS=N first adds N other users, each with what the benchmark's
# GET /v1/me setup leaves (a registration and a sign-in: a session, a refresh token, two audit
# events), then VACUUM ANALYZE, as a full benchmark run has before login; CASES=beside runs only
# the second case below.
#
# Four cases, each on a freshly migrated database: one client alone; one client beside
# `tessera ceiling argon2 --threads <cores>` (the hashing arenas evicting the backends' caches, as
# in the server); 16 clients (the pool's size) taking turns on 16 users; 16 clients on one user
# (overlapping sign-ins of one user wait on its row). An experiment record, not part of CI: the
# statements below mirror the code as of the commit that added this script; keep them in step if
# the sign-in's SQL changes. Needs the release build (`bench/run.sh` or `cargo build --release -p
# api`), psql and pgbench, PostgreSQL on TESSERA_BENCH_PG_URL (default 127.0.0.1:5432, user postgres).
set -euo pipefail
cd "$(dirname "$0")/../.."

RATE="${1:-280}"
SECS="${2:-18}"
PREFILL_USERS="${PREFILL_USERS:-0}"
CASES="${CASES:-all}"
case "$PREFILL_USERS" in '' | *[!0-9]*) echo "PREFILL_USERS must be a number" >&2; exit 2 ;; esac
case "$CASES" in all | beside) ;; *) echo "CASES must be all or beside" >&2; exit 2 ;; esac
CORES="$(nproc)"
DB_PREFIX=tessera_pg_sign_in
# shellcheck source=bench/experiments/common.sh
. bench/experiments/common.sh

HASH='$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0123456789abcdef0123456789abcdef0123456789A'
uid() { echo "('00000000-0000-7000-8000-' || lpad(($1)::text, 12, '0'))::uuid"; }

# $1: the user expression (1, or :client_id + 1)
script() {
    cat <<EOF
\set u $1
SELECT id, email, password_hash, display_name, status, email_verified_at, mfa_enabled, failed_login_count, locked_until, last_login_at, metadata, version, created_at, updated_at, deleted_at FROM users WHERE email = 'u' || :u || '@example.com' AND deleted_at IS NULL LIMIT 1;
WITH verified AS (
    UPDATE users SET last_login_at = now(), failed_login_count = 0
    WHERE id = $(uid :u) AND password_hash = '$HASH' AND status = 'active' AND deleted_at IS NULL
    RETURNING id
), opened AS (
    INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, ip, user_agent, mfa_level)
    SELECT uuid7(), verified.id, now(), now(), now() + interval '30 days', '127.0.0.1', 'oha/1.16', 0 FROM verified
    RETURNING id
), token AS (
    INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)
    SELECT uuid7(), opened.id, md5(random()::text) || md5(random()::text), now(), now() + interval '30 days' FROM opened
    RETURNING id, session_id
), event AS (
    INSERT INTO audit_events (id, organization_id, actor_user_id, actor_session_id, action, target_type, target_id, details, ip, user_agent, request_id, created_at)
    SELECT uuid7(), NULL, $(uid :u), token.session_id, 'auth.login_succeeded', 'session', token.session_id::text, '{}', '127.0.0.1', 'oha/1.16', md5(random()::text), now() FROM token
    RETURNING id
)
SELECT (SELECT count(*) FROM event) AS opened;
EOF
}

fresh_db() {
    fresh_database
    # Time-ordered ids like the server's Uuid::now_v7() (index pages fill the same way).
    psql "$DB_URL" -qXc "CREATE FUNCTION uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS \$\$
        SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
            substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
            FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid \$\$"
    psql "$DB_URL" -qXc "INSERT INTO users (id, email, password_hash, display_name, metadata, created_at, updated_at)
        SELECT $(uid n), 'u' || n || '@example.com', '$HASH', 'U', '{}', now(), now() FROM generate_series(1, 16) n"
    if [ "$PREFILL_USERS" -gt 0 ]; then
        psql "$DB_URL" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (id, email, password_hash, display_name, metadata, created_at, updated_at, last_login_at)
    SELECT uuid7(), 'other' || n || '@example.com', '$HASH', 'U', '{}', now(), now(), now()
    FROM generate_series(1, $PREFILL_USERS) n;
INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, ip, user_agent, mfa_level)
    SELECT uuid7(), id, now(), now(), now() + interval '30 days', '127.0.0.1', 'tessera-bench', 0
    FROM users WHERE email LIKE 'other%';
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)
    SELECT uuid7(), id, md5(random()::text) || md5(random()::text), now(), expires_at FROM sessions;
INSERT INTO audit_events (id, organization_id, actor_user_id, actor_session_id, action, target_type, target_id, details, ip, user_agent, request_id, created_at)
    SELECT uuid7(), NULL, s.user_id, NULL, a.action, 'user', s.user_id::text, '{}', '127.0.0.1', 'tessera-bench', md5(random()::text), now()
    FROM sessions s CROSS JOIN (VALUES ('user.registered'), ('auth.login_succeeded')) a(action);
VACUUM ANALYZE;
SQL
    fi
}

# $1 label, $2 clients, $3 user expression, $4 "argon2" to hash beside it
measure() {
    fresh_db
    script "$3" >"$WORK/sign-in.sql"
    local ceiling=""
    if [ "${4:-}" = argon2 ]; then
        "$TESSERA" ceiling argon2 --threads "$CORES" --seconds $((SECS + 4)) >/dev/null &
        ceiling=$!
        BACKGROUND+=("$ceiling")
    fi
    pgbench "$DB_URL" -n -M prepared -f "$WORK/sign-in.sql" -c "$2" -R "$RATE" -T $((SECS + 4)) \
        >"$WORK/pgbench.out" 2>&1 &
    local bench=$!
    BACKGROUND+=("$bench")
    sleep 2 & wait $!     # (waiting in `wait`, a Ctrl-C is handled at once)
    local pids
    pids=$(pgbench_backends "$2")
    # shellcheck disable=SC2086 # one PID per word
    ticks() { cpu_ticks $pids; }
    commits() { psql "$PG" -qAtXc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'"; }
    local t0 c0 t1 c1
    t0=$(ticks); c0=$(commits)
    sleep "$SECS" & wait $!
    t1=$(ticks); c1=$(commits)
    wait "$bench" || { cat "$WORK/pgbench.out" >&2; exit 1; }
    if [ -n "$ceiling" ]; then wait "$ceiling"; fi
    BACKGROUND=()
    # Two statements (two commits) per sign-in.
    awk -v l="$1" -v t=$((t1 - t0)) -v c=$((c1 - c0)) -v hz="$HZ" 'BEGIN {
        printf "%-44s %6.0f sign-ins/s  %.3f ms of backend CPU per sign-in\n", l, c / 2 / '"$SECS"', t * 1000 / hz / (c / 2) }'
}

echo "pgbench -M prepared -R $RATE, ${SECS} s measured; $(nproc) cores, $(psql "$PG" -qAtXc 'SHOW server_version'); $PREFILL_USERS other users"
if [ "$CASES" = beside ]; then
    measure "1 client, beside the Argon2id ceiling" 1 1 argon2
    exit 0
fi
measure "1 client, alone" 1 1
measure "1 client, beside the Argon2id ceiling" 1 1 argon2
measure "16 clients on 16 users, beside the ceiling" 16 ':client_id + 1' argon2
measure "16 clients on one user, beside the ceiling" 16 1 argon2
