#!/usr/bin/env bash
# API fuzzing with Schemathesis against a freshly started Tessera server.
#
# Usage:
#   scripts/schemathesis.sh 'sqlite:///tmp/x/st.db?mode=rwc'   # any SQLite URL (directory must exist)
#   scripts/schemathesis.sh postgres                         # fresh DB tessera_st_<random>, dropped at exit
#   scripts/schemathesis.sh 'postgres://user@host:5432/db'    # an existing PostgreSQL database, used as is
#   scripts/schemathesis.sh                                  # SQLite in a temporary directory
#
# Environment (all optional):
#   TESSERA_BIN      server binary            (default /var/tmp/tessera-target/debug/tessera)
#   TESSERA_VENV     virtualenv for the tool  (default /var/tmp/tessera-venv; created/reused)
#   ST_EXAMPLES      examples per operation   (default 50)
#   ST_TIMEOUT       hard bound on the whole schemathesis run, in seconds (default 270); hitting it fails
#   ST_SEED          fixed random seed, to replay a run
#   ST_WORKERS       schemathesis workers     (default 1: deterministic order, no self-inflicted load)
#   ST_REPORT_DIR    if set, JUnit XML and a VCR cassette of every request are written there
#   ST_PG_ADMIN_URL  admin connection for `postgres` (default postgres://postgres@127.0.0.1:5432/postgres)
#
# Exit status: 0 only when Schemathesis found no failure and no error; non-zero otherwise.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

TESSERA_BIN=${TESSERA_BIN:-/var/tmp/tessera-target/debug/tessera}
TESSERA_VENV=${TESSERA_VENV:-/var/tmp/tessera-venv}
ST_EXAMPLES=${ST_EXAMPLES:-50}
ST_TIMEOUT=${ST_TIMEOUT:-270}
ST_WORKERS=${ST_WORKERS:-1}
ST_PG_ADMIN_URL=${ST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_ARG=${1:-}

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

[ -x "$TESSERA_BIN" ] || die "no server binary at $TESSERA_BIN (build it: cargo build -p api)"
command -v curl >/dev/null 2>&1 || die "curl is required"

# --- state cleaned up by the trap -----------------------------------------------------------
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tessera-st.XXXXXX")
SERVER_PID=
PG_DB=
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    status=$?
    set +e
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null
        # Graceful shutdown first; SIGKILL if it has not gone within 10 s.
        i=0
        while kill -0 "$SERVER_PID" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if [ "$status" -ne 0 ] && [ -s "$WORK_DIR/server.log" ]; then
        log "last lines of the server log (level ${TESSERA_LOG__LEVEL:-error}):"
        tail -n 40 "$WORK_DIR/server.log" | cut -c1-2000 >&2
    fi
    if [ -n "$PG_DB" ]; then
        psql "$ST_PG_ADMIN_URL" -qAt -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 \
            || log "warning: could not drop database $PG_DB"
    fi
    rm -rf "$WORK_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tool ------------------------------------------------------------------------------------
if [ ! -x "$TESSERA_VENV/bin/python" ]; then
    log "creating virtualenv $TESSERA_VENV"
    python3 -m venv "$TESSERA_VENV"
fi
if [ "$("$TESSERA_VENV/bin/python" -c 'import importlib.metadata as m
try: print(m.version("schemathesis"))
except Exception: print("")')" != "$SCHEMATHESIS_VERSION" ]; then
    log "installing schemathesis==$SCHEMATHESIS_VERSION"
    "$TESSERA_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$TESSERA_VENV/bin/schemathesis"

# --- database --------------------------------------------------------------------------------
case "$DB_ARG" in
    postgres)
        command -v psql >/dev/null 2>&1 || die "psql is required for a PostgreSQL run"
        PG_DB="tessera_st_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
        psql "$ST_PG_ADMIN_URL" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
        DATABASE_URL="${ST_PG_ADMIN_URL%/*}/$PG_DB"
        ;;
    "")
        DATABASE_URL="sqlite://$WORK_DIR/st.db?mode=rwc"
        ;;
    sqlite:* | postgres://* | postgresql://*)
        DATABASE_URL=$DB_ARG
        ;;
    *)
        die "unknown database argument '$DB_ARG' (want a sqlite:/postgres:// URL or 'postgres')"
        ;;
esac
log "database: $DATABASE_URL"

# --- server ----------------------------------------------------------------------------------
# --port 0: the kernel picks a free port atomically (no probe-then-bind race); the server prints
# the URL it actually bound, which we read from its stdout.
# TESSERA_BIN/TESSERA_VENV are this script's own settings, not the server's: figment would read
# any TESSERA_* variable as configuration (older binaries refuse to start on unknown keys).
mkdir -p "$WORK_DIR/data"
# Every request comes from 127.0.0.1 and most sign-ins name the one fixture account: the
# per-client and per-account limits production needs would answer most of the run 429 and leave
# the operations behind them unexplored. They are raised here on purpose; the limits themselves
# are tested in tests/api/limits.rs (and 429 is in the spec wherever it can be answered).
env -u TESSERA_BIN -u TESSERA_VENV \
    TESSERA_LIMITS__LOGIN_MAX=1000000000 \
    TESSERA_LIMITS__REGISTER_MAX=1000000000 \
    TESSERA_LIMITS__PASSWORD_RESET_MAX=1000000000 \
    TESSERA_LIMITS__EMAIL_VERIFICATION_MAX=1000000000 \
    TESSERA_LIMITS__FREE_FAILURES=1000000000 \
    TESSERA_LIMITS__FAILURE_BUDGET=1000000000 \
    TESSERA_ENVIRONMENT=test \
    TESSERA_PASSWORD__MEMORY_KIB=64 \
    TESSERA_PASSWORD__ITERATIONS=1 \
    TESSERA_DATA_DIR="$WORK_DIR/data" \
    TESSERA_LOG__LEVEL="${TESSERA_LOG__LEVEL:-error}" \
    NO_COLOR=1 \
    DATABASE_URL="$DATABASE_URL" \
    "$TESSERA_BIN" serve --bind 127.0.0.1 --port 0 >"$WORK_DIR/server.log" 2>&1 &
SERVER_PID=$!

BASE=
i=0
while [ "$i" -lt 300 ]; do # at most ~30 s for startup (migrations included) and readiness
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during startup"
    if [ -z "$BASE" ]; then
        BASE=$(sed -n 's/^Tessera listening on \(http:[^ ]*\)$/\1/p' "$WORK_DIR/server.log" | head -n 1)
    fi
    if [ -n "$BASE" ] &&
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz" || true)" = 200 ]; then
        break
    fi
    sleep 0.1
    i=$((i + 1))
done
[ "$i" -lt 300 ] || die "the server did not become ready within 30 s"
log "server ready at $BASE (pid $SERVER_PID)"

# --- a real account --------------------------------------------------------------------------
ST_EMAIL="st-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')@example.com"
ST_PASSWORD="St-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" # 27 random chars: not a common one
export ST_EMAIL ST_PASSWORD

code=$(curl -s -o "$WORK_DIR/register.json" -w '%{http_code}' --max-time 10 \
    -H 'Content-Type: application/json' \
    -d "{\"email\":\"$ST_EMAIL\",\"password\":\"$ST_PASSWORD\",\"display_name\":\"Schemathesis\"}" \
    "$BASE/v1/auth/register")
[ "$code" = 201 ] || die "register answered $code: $(cat "$WORK_DIR/register.json")"
code=$(curl -s -o "$WORK_DIR/login.json" -w '%{http_code}' --max-time 10 \
    -H 'Content-Type: application/json' \
    -d "{\"email\":\"$ST_EMAIL\",\"password\":\"$ST_PASSWORD\"}" \
    "$BASE/v1/auth/login")
[ "$code" = 200 ] || die "login answered $code: $(cat "$WORK_DIR/login.json")"
TOKEN=$("$TESSERA_VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' \
    "$WORK_DIR/login.json")
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $TOKEN" "$BASE/v1/me")
[ "$code" = 200 ] || die "GET /v1/me with the fresh token answered $code"
log "signed in as $ST_EMAIL"

# --- an organization owned by that account -------------------------------------------------
# The run is also the run of an organization's owner: the account above creates an organization
# with an account and a project, and the hook below puts their real ids into most positive cases
# of tenant-scoped operations (the rest keep the generated ids, which exercise the 404 path).
# Without that, every operation under /v1/orgs/{org_id} would only ever be fuzzed as an outsider.
api_create() { # path body -> id of the created object
    local out code
    out="$WORK_DIR/created.json"
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d "$2" "$BASE$1")
    [ "$code" = 201 ] || die "POST $1 answered $code: $(cat "$out")"
    "$TESSERA_VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$out"
}
ST_ORG_ID=$(api_create /v1/orgs "{\"name\":\"Schemathesis\",\"slug\":\"st-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')\"}")
ST_ACCOUNT_ID=$(api_create "/v1/orgs/$ST_ORG_ID/accounts" '{"name":"Main","slug":"main"}')
ST_PROJECT_ID=$(api_create "/v1/orgs/$ST_ORG_ID/accounts/$ST_ACCOUNT_ID/projects" '{"name":"Web","slug":"web"}')
ST_ROLE_ID=$(api_create "/v1/orgs/$ST_ORG_ID/roles" '{"name":"st-auditor","permissions":["project:read"]}')
ST_INVITATION_ID=$(api_create "/v1/orgs/$ST_ORG_ID/invitations" "{\"email\":\"invitee-$ST_EMAIL\",\"role_id\":\"$ST_ROLE_ID\"}")
ST_USER_ID=$("$TESSERA_VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK_DIR/register.json")
ST_ASSIGNMENT_ID=$(curl -sf --max-time 10 -H "Authorization: Bearer $TOKEN" "$BASE/v1/orgs/$ST_ORG_ID/role-assignments" |
    "$TESSERA_VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
ST_VIEWER_ROLE_ID=$(curl -sf --max-time 10 -H "Authorization: Bearer $TOKEN" "$BASE/v1/orgs/$ST_ORG_ID/roles" |
    "$TESSERA_VENV/bin/python" -c 'import json,sys; print(next(r["id"] for r in json.load(sys.stdin)["items"] if r["name"] == "viewer"))')
export ST_ORG_ID ST_ACCOUNT_ID ST_PROJECT_ID ST_ROLE_ID ST_INVITATION_ID ST_USER_ID ST_ASSIGNMENT_ID ST_VIEWER_ROLE_ID
log "owner of organization $ST_ORG_ID (account $ST_ACCOUNT_ID, project $ST_PROJECT_ID, role $ST_ROLE_ID)"

# --- authentication during the run -----------------------------------------------------------
# Four operations can kill the token they are called with or its siblings: POST /v1/auth/logout
# (revokes the current session), DELETE /v1/me/sessions/{id} (the current one too, once the
# stateful phase feeds it a real id from GET /v1/me/sessions), POST /v1/me/password and
# DELETE /v1/me/sessions (revoke the other sessions). With one fixed
# `-H "Authorization: Bearer <token>"`, every case after the first successful logout would carry
# a dead token and only ever exercise the 401 path, silently.
#
# So the token is not passed with -H (a -H header also overrides any auth hook). Instead a
# Schemathesis auth hook signs in afresh, with the account made above, for every generated test
# case of an operation that declares `security` in the spec (refresh_interval=None: no cache),
# and sends that case's own `Authorization: Bearer <access_token>`. No case can inherit a session
# that an earlier case revoked, in any phase. (Schemathesis's built-in re-login on 401,
# `[auth.dynamic]` with `retry-on`, was tried first: it is not applied in the stateful phase,
# which then ran its remaining steps with a revoked token.) Every operation, the revoking ones
# included, stays in the run with every check: nothing is excluded. Cases that deliberately drop
# or corrupt the credentials (negative security data, the `ignored_auth` check) still do so.
#
# (The sign-in above, with its check of GET /v1/me, fails the script fast and clearly when the
# account flow itself is broken, before any fuzzing starts.)
ST_BASE_URL=$BASE
export ST_BASE_URL
cat >"$WORK_DIR/tessera_auth.py" <<'EOF'
import itertools
import os
import uuid

import requests
import schemathesis

_LOGIN_URL = os.environ["ST_BASE_URL"] + "/v1/auth/login"
_CREDENTIALS = {"email": os.environ["ST_EMAIL"], "password": os.environ["ST_PASSWORD"]}
_HTTP = requests.Session()


def _declares_security(ctx):
    return bool(ctx.operation.definition.raw.get("security"))


@schemathesis.auth(refresh_interval=None).apply_to(_declares_security)
class FreshLogin:
    """A new session, and so a live token, for every test case."""

    def get(self, case, ctx):
        response = _HTTP.post(_LOGIN_URL, json=_CREDENTIALS, timeout=15)
        if response.status_code != 200:
            raise RuntimeError(f"login answered {response.status_code}: {response.text[:500]}")
        return response.json()["access_token"]

    def set(self, case, data, ctx):
        case.headers = dict(case.headers or {})
        case.headers["Authorization"] = f"Bearer {data}"


# Real tenant objects: a positive case of an operation under /v1/orgs/{org_id} gets the ids of the
# organization the account owns (three cases in four; the fourth keeps the generated ids). A
# DELETE gets a fresh object made for it, so the fixture survives the run.
_FIXTURE = {
    "org_id": os.environ["ST_ORG_ID"],
    "account_id": os.environ["ST_ACCOUNT_ID"],
    "project_id": os.environ["ST_PROJECT_ID"],
    "role_id": os.environ["ST_ROLE_ID"],
    "invitation_id": os.environ["ST_INVITATION_ID"],
    # The account's own membership and owner grant: removing either is refused (last owner),
    # so these cases exercise that refusal without changing anything.
    "user_id": os.environ["ST_USER_ID"],
    "assignment_id": os.environ["ST_ASSIGNMENT_ID"],
}
_BASE = os.environ["ST_BASE_URL"]
_COUNTER = itertools.count()


def _create(path, _auth, body=None):
    # A token of its own: a negative case's Authorization header may be deliberately broken.
    login = _HTTP.post(_LOGIN_URL, json=_CREDENTIALS, timeout=15)
    auth = f"Bearer {login.json()['access_token']}"
    slug = "st-" + uuid.uuid4().hex[:12]
    response = _HTTP.post(_BASE + path, json=body or {"name": slug, "slug": slug},
                          headers={"Authorization": auth}, timeout=15)
    if response.status_code != 201:
        raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:500]}")
    return response.json()["id"]


def _use_tenant_fixture(case, auth, positive):
    params = case.path_parameters
    if not params or "org_id" not in params:
        return
    substitute = positive and next(_COUNTER) % 4 != 3
    ids = dict(_FIXTURE)
    org = ids["org_id"]
    path = case.operation.path
    # The stateful phase feeds ids from earlier responses, the fixture's among them, to positive
    # and negative cases alike: a DELETE naming a fixture object gets a fresh one too.
    names_fixture = any(str(v) in _FIXTURE.values() for v in params.values())
    if not substitute and not (names_fixture and case.operation.method.upper() == "DELETE"):
        return
    if case.operation.method.upper() == "DELETE":
        fresh = "st-" + uuid.uuid4().hex[:12]
        if path == "/v1/orgs/{org_id}":
            ids["org_id"] = _create("/v1/orgs", auth)
        elif path == "/v1/orgs/{org_id}/accounts/{account_id}":
            ids["account_id"] = _create(f"/v1/orgs/{org}/accounts", auth)
        elif path.endswith("/projects/{project_id}"):
            ids["project_id"] = _create(f"/v1/orgs/{org}/accounts/{ids['account_id']}/projects", auth)
        elif path.endswith("/roles/{role_id}"):
            ids["role_id"] = _create(f"/v1/orgs/{org}/roles", auth,
                                     {"name": fresh, "permissions": ["project:read"]})
        elif path.endswith("/invitations/{invitation_id}"):
            ids["invitation_id"] = _create(f"/v1/orgs/{org}/invitations", auth,
                                           {"email": f"{fresh}@example.com", "role_id": ids["role_id"]})
    for name in params:
        if name in ids:
            params[name] = ids[name]


def _use_real_references(case):
    """A positive body's references (a role, a scope, a user) name things that exist in the
    path's organization, as a client's would: the built-in viewer role (valid everywhere), the
    organization itself, and the signed-in account (a member of every organization it made).
    Unknown references are a 422 the black-box tests cover."""
    params = case.path_parameters or {}
    if "org_id" not in params or not isinstance(case.body, dict):
        return
    if "role_id" in case.body:
        case.body["role_id"] = os.environ["ST_VIEWER_ROLE_ID"]
    if isinstance(case.body.get("scope"), dict):
        case.body["scope"] = {"type": "organization", "id": str(params["org_id"])}
    if "user_id" in case.body:
        case.body["user_id"] = _FIXTURE["user_id"]


# Optimistic locking: a PATCH needs the version the client last read (body `version` or
# If-Match), which is server state no schema can generate, just like the token above. For
# positive cases the harness does what a real client does: reads the current version (GET on
# the same path) and sends it (a DELETE's optional If-Match likewise). Negative cases keep whatever the generator made (wrong types, 0,
# garbage If-Match...), and stale versions (412) and missing ones (428) are covered by the
# black-box tests. This runs right before each request is sent (the coverage phase
# authenticates a batch of cases ahead of time, so a version read at that point would already
# be stale).
def _is_positive(case):
    try:
        return case.meta is None or case.meta.generation.mode.is_positive
    except AttributeError:
        return True


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    auth = (case.headers or {}).get("Authorization")
    if not auth:
        return
    positive = _is_positive(case)
    _use_tenant_fixture(case, auth, positive)
    if not positive:
        return
    _use_real_references(case)
    method = case.operation.method.upper()
    if method == "DELETE" and "{" in case.operation.path:
        # If-Match on a DELETE is checked when given: send the current version, as a client would.
        if case.headers.get("If-Match") not in (None, "*"):
            current = _HTTP.get(_BASE + case.formatted_path, headers={"Authorization": auth}, timeout=15)
            if current.status_code == 200 and "version" in current.json():
                case.headers["If-Match"] = f'"{current.json()["version"]}"'
        return
    if method != "PATCH" or not isinstance(case.body, dict):
        return
    path = case.formatted_path
    current = _HTTP.get(_BASE + path, headers={"Authorization": auth}, timeout=15)
    if current.status_code != 200:
        return
    version = current.json()["version"]
    if_match = case.headers.get("If-Match")
    if if_match is not None and if_match != "*":
        case.headers["If-Match"] = f'"{version}"'
    if case.body.get("version") is not None or if_match is None:
        case.body["version"] = version
EOF

# --- the run ---------------------------------------------------------------------------------
# --checks all: in Schemathesis 4 every check is on by default anyway (not_a_server_error,
# status_code_conformance, content_type_conformance, response_headers_conformance,
# response_schema_conformance, positive/negative_data_*, unsupported_method, ignored_auth, ...);
# `all` spells that out. All phases (examples, coverage, fuzzing, stateful) run.
# --continue-on-failure: an operation's first failure does not end its testing, so one finding
# cannot hide another (e.g. a 500) behind it.
# -n bounds the examples per operation; `timeout` bounds the wall time (reaching it fails the
# script). --max-time is not used: in this version it means "keep fuzzing until the budget is
# spent", not a cap.
# --output-sanitize false: the account, its password and its tokens are throwaway data of this
# run's own database, and the printed curl reproductions must be runnable as printed.
set -- --checks all \
    --max-examples "$ST_EXAMPLES" \
    --continue-on-failure \
    --workers "$ST_WORKERS" \
    --request-timeout 15 \
    --generation-database none \
    --output-sanitize false \
    --no-color
if [ -n "${ST_SEED:-}" ]; then set -- "$@" --seed "$ST_SEED"; fi
if [ -n "${ST_REPORT_DIR:-}" ]; then
    mkdir -p "$ST_REPORT_DIR"
    set -- "$@" --report junit,vcr --report-dir "$ST_REPORT_DIR"
fi

log "schemathesis $SCHEMATHESIS_VERSION: $ST_EXAMPLES examples per operation, at most ${ST_TIMEOUT}s"
started=$(date +%s)
st_status=0
# Run from the work directory so nothing the tool writes lands in the checkout.
(cd "$WORK_DIR" && SCHEMATHESIS_HOOKS="$WORK_DIR/tessera_auth.py" exec timeout --signal=INT --kill-after=15 "$ST_TIMEOUT" \
    "$ST" run "$BASE/openapi.json" "$@") || st_status=$?
log "schemathesis finished in $(($(date +%s) - started))s with status $st_status"
if [ "$st_status" -eq 124 ] || [ "$st_status" -eq 137 ]; then
    log "error: the run hit ST_TIMEOUT=${ST_TIMEOUT}s"
fi
kill -0 "$SERVER_PID" 2>/dev/null || { log "error: the server died during the run"; st_status=1; }
exit "$st_status"
