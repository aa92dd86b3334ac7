#!/usr/bin/env bash
# Make this machine's PostgreSQL serve agentwatch's state store tests, idempotently, and print the
# URL to use (the only line on stdout; what was done goes to stderr):
#   postgresql://agentwatch:PASSWORD@127.0.0.1:PORT/agentwatch_test
# - install the `postgresql` package with apt-get when no cluster tool is there (needs root);
# - start the cluster when it is down (`pg_ctlcluster VERSION NAME start`; the first cluster
#   `pg_lsclusters` lists, or $AGENTWATCH_PG_CLUSTER, e.g. 15/main) and wait until it answers;
# - create the role `agentwatch` (LOGIN CREATEDB) and its database `agentwatch_test`; the role's
#   password is made once per machine and kept in $AGENTWATCH_PG_STATE/password (mode 600), so a
#   second run, or a run beside another one, keeps the same password.
# Works as root (psql as the cluster's owner through peer authentication) or with `sudo -n`.
# The tests make a database of their own per test from that URL and drop it (tests/conftest.py).
# Exit 0 when the URL answers, 1 otherwise.
set -uo pipefail

ROLE=agentwatch
DATABASE=agentwatch_test
PG_WAIT="${PG_WAIT:-60}"
say() { echo "postgres.sh: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}
as_owner() {  # run a command as the cluster's owner (peer authentication on the unix socket)
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$OWNER" -- "$@"; else sudo -n -u "$OWNER" "$@"; fi
}

if [ "$(id -u)" -eq 0 ]; then
  STATE="${AGENTWATCH_PG_STATE:-/var/tmp/agentwatch-postgres}"
else
  STATE="${AGENTWATCH_PG_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/agentwatch-postgres}"
fi
mkdir -p "$STATE" && chmod 700 "$STATE" || { say "cannot create $STATE"; exit 1; }
# One run at a time on this machine: the start, the role and the password are shared.
exec 9>>"$STATE/lock"
flock -w 120 9 || { say "another postgres.sh holds $STATE/lock"; exit 1; }

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    say "installing postgresql"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/tmp/agentwatch-apt-pg.log 2>&1 \
      || { as_root apt-get update -q >>/tmp/agentwatch-apt-pg.log 2>&1; \
           as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >>/tmp/agentwatch-apt-pg.log 2>&1; } \
      || { say "apt-get install postgresql failed (see /tmp/agentwatch-apt-pg.log)"; exit 1; }
  fi
  command -v pg_lsclusters >/dev/null 2>&1 || { say "no PostgreSQL cluster tools (pg_lsclusters)"; exit 1; }
fi

# VERSION CLUSTER PORT STATUS OWNER ...
if [ -n "${AGENTWATCH_PG_CLUSTER:-}" ]; then
  line=$(pg_lsclusters --no-header | awk -v v="${AGENTWATCH_PG_CLUSTER%%/*}" -v c="${AGENTWATCH_PG_CLUSTER#*/}" '$1==v && $2==c')
else
  line=$(pg_lsclusters --no-header | head -n 1)
fi
[ -n "$line" ] || { say "no PostgreSQL cluster ${AGENTWATCH_PG_CLUSTER:-on this machine} (pg_lsclusters)"; exit 1; }
read -r VERSION CLUSTER PORT STATUS OWNER _ <<<"$line"

answers() { pg_isready -q -h 127.0.0.1 -p "$PORT" >/dev/null 2>&1; }
if answers; then
  say "cluster $VERSION/$CLUSTER answers on 127.0.0.1:$PORT"
else
  case "$STATUS" in
    online*) say "cluster $VERSION/$CLUSTER is online but does not answer yet; waiting" ;;
    *)
      say "starting cluster $VERSION/$CLUSTER (port $PORT)"
      # Another process may be starting it at the same moment: the wait below decides.
      # 9>&-: the server must not inherit (and hold for good) the lock of this script.
      as_root pg_ctlcluster "$VERSION" "$CLUSTER" start >&2 9>&- || say "pg_ctlcluster start said no; waiting anyway"
      ;;
  esac
  for _ in $(seq 1 "$PG_WAIT"); do answers && break; sleep 1; done
  answers || { say "cluster $VERSION/$CLUSTER did not answer on 127.0.0.1:$PORT within ${PG_WAIT}s"; exit 1; }
  say "cluster $VERSION/$CLUSTER answers on 127.0.0.1:$PORT"
fi

password_file="$STATE/password"
if [ ! -s "$password_file" ]; then
  (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$password_file")
fi
PASSWORD=$(cat "$password_file")
URL="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DATABASE"

# The role and its database, created when missing; the password set to ours either way.
if ! as_owner psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres -v pw="$PASSWORD" >/dev/null 2>/tmp/agentwatch-psql.log <<SQL
SELECT 'CREATE ROLE $ROLE LOGIN CREATEDB' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE $ROLE WITH LOGIN CREATEDB PASSWORD :'pw';
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DATABASE') \gexec
SQL
then
  say "could not create the role $ROLE and database $DATABASE as $OWNER:"
  cat /tmp/agentwatch-psql.log >&2
  exit 1
fi
if ! PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=10 psql -X -q -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DATABASE" -c 'SELECT 1' >/dev/null 2>/tmp/agentwatch-psql.log; then
  say "the role $ROLE cannot log in on 127.0.0.1:$PORT:"
  cat /tmp/agentwatch-psql.log >&2
  exit 1
fi
say "role $ROLE and database $DATABASE ready: postgresql://$ROLE:***@127.0.0.1:$PORT/$DATABASE"
echo "$URL"
