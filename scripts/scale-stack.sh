#!/usr/bin/env bash
# A Prefect server for scale: PostgreSQL database + Redis broker, on 127.0.0.1 (README "Scale").
#
#   bash scripts/scale-stack.sh install   install what is missing: redis-server and psql (apt), prefect-redis (pip)
#   bash scripts/scale-stack.sh start     install, then start PostgreSQL (scripts/postgres.sh), create the
#                                         Prefect database, start redis-server and the Prefect server
#                                         against them, wait until it is ready, write the env files
#   bash scripts/scale-stack.sh env       print `export PREFECT_API_URL=...` for workers and clients:
#                                         eval "$(bash scripts/scale-stack.sh env)"
#   bash scripts/scale-stack.sh status    say what runs; exit 0 when the server is ready
#   bash scripts/scale-stack.sh stop      stop what `start` started, by pid (SCALE_STACK_DROP=1: drop the database)
#
# Idempotent: `start` on a running stack only checks it and rewrites the env files. Everything lives in
# $SCALE_STACK_DIR: pids/, logs/ (redis.log, server.log, services.log), home/ (PREFECT_HOME),
# client.env (what a worker needs: PREFECT_API_URL) and server.env (mode 600: every server setting,
# the database URL with its password). Knobs (environment, with defaults):
#   SCALE_STACK_DIR=/tmp/agentwatch-scale      run directory
#   SCALE_STACK_PORT=4300                      Prefect API port (127.0.0.1)
#   SCALE_STACK_REDIS_PORT=6390                redis-server port (127.0.0.1; no persistence)
#   SCALE_STACK_DATABASE=prefect_scale         the Prefect database, created when missing
#   SCALE_STACK_POSTGRES_URL=                  a role that may create databases (default: the URL that
#                                              scripts/postgres.sh prints after starting the cluster)
#   SCALE_STACK_FRESH=0                        1: drop and recreate the database at start
#   SCALE_STACK_API_WORKERS=1                  >1: `prefect server start --workers N` (API only) plus
#                                              `prefect server services start` in a process of its own
#   SCALE_STACK_WAIT=180                       seconds to wait for readiness
# Any PREFECT_* setting in the environment wins over the defaults written below.
set -uo pipefail
set +m  # no job control: a background `setsid` then keeps its pid, the one `stop` signals
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DIR="${SCALE_STACK_DIR:-/tmp/agentwatch-scale}"
PORT="${SCALE_STACK_PORT:-4300}"
REDIS_PORT="${SCALE_STACK_REDIS_PORT:-6390}"
DATABASE="${SCALE_STACK_DATABASE:-prefect_scale}"
API_WORKERS="${SCALE_STACK_API_WORKERS:-1}"
WAIT="${SCALE_STACK_WAIT:-180}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PIDS="$DIR/pids"
LOGS="$DIR/logs"
API_URL="http://127.0.0.1:$PORT/api"
ADMIN_URL=""    # set by ensure_database: the role that creates the database
DATABASE_URL="" # set by ensure_database: the Prefect database, postgresql://...

say() { echo "scale-stack: $*" >&2; }
die() { say "$*"; exit 1; }
die_log() { say "$1; the end of $2:"; tail -n 5 "$2" >&2; exit 1; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

case "$DATABASE" in
  *[!a-z0-9_]* | "") die "SCALE_STACK_DATABASE must be lowercase letters, digits and _ (got '$DATABASE')" ;;
esac
case "$API_WORKERS" in *[!0-9]* | "" | 0) die "SCALE_STACK_API_WORKERS must be a positive integer" ;; esac

# --- install -------------------------------------------------------------------------------------

# apt_install PACKAGE...: install Debian packages (needs root or sudo -n), refreshing the lists once
# when the first try fails.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "missing $* and there is no apt-get to install it"
  say "installing $* (log: /tmp/agentwatch-apt-scale.log)"
  # A dpkg run interrupted earlier would make apt-get refuse: finish it first.
  as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/tmp/agentwatch-apt-scale.log 2>&1; then
    as_root apt-get update -q >>/tmp/agentwatch-apt-scale.log 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>/tmp/agentwatch-apt-scale.log 2>&1 \
      || die "apt-get install $* failed (see /tmp/agentwatch-apt-scale.log)"
  fi
}

install_debian() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || missing+=(redis-server)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
  command -v redis-server >/dev/null 2>&1 || die "redis-server is still missing after apt-get"
}

install_prefect_redis() {
  [ -x "$PY" ] || bash scripts/setup.sh >&2 || die "scripts/setup.sh failed"
  "$PY" -c "import prefect_redis" >/dev/null 2>&1 && return 0
  say "installing prefect-redis (pinned by constraints.txt)"
  "$PY" -m pip install --quiet -c constraints.txt prefect-redis >&2 || die "pip install prefect-redis failed"
}

do_install() {
  install_debian
  install_prefect_redis
  say "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), prefect-redis $("$PY" -c 'import importlib.metadata as m; print(m.version("prefect-redis"))')"
}

# --- processes, by pid -----------------------------------------------------------------------------

# alive NAME PATTERN: the pid in $PIDS/NAME.pid runs, and its command line contains PATTERN (a pid
# that the system gave to another program since is not ours).
alive() {
  local pid
  pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# stop_pid NAME PATTERN: SIGTERM the process group `start` made for it, SIGKILL after 20 s.
stop_pid() {
  local name=$1 pattern=$2 pid
  if ! alive "$name" "$pattern"; then
    rm -f "$PIDS/$name.pid"
    return 0
  fi
  pid=$(cat "$PIDS/$name.pid")
  say "stopping $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) did not stop within 20s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$PIDS/$name.pid"
}

# launch NAME LOG COMMAND...: start COMMAND in a session of its own (so `stop` reaches its children),
# detached from this shell's descriptors, and record its pid.
launch() {
  local name=$1 log=$2
  shift 2
  # 8>&-: the lock `start` holds must not live on in the daemons.
  setsid "$@" </dev/null >>"$log" 2>&1 8>&- &
  echo $! >"$PIDS/$name.pid"
}

port_free() { "$PY" - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no owner
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
PY
}

http_ok() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$1" >/dev/null 2>&1; }

# --- PostgreSQL ------------------------------------------------------------------------------------

postgres_admin_url() {
  if [ -n "${SCALE_STACK_POSTGRES_URL:-}" ]; then
    echo "$SCALE_STACK_POSTGRES_URL"
    return 0
  fi
  bash scripts/postgres.sh 2>>"$LOGS/postgres.log" 8>&- | tail -n 1
}

# psql_admin URL SQL...: run SQL as the admin role; -X: no ~/.psqlrc.
psql_admin() {
  local url=$1
  shift
  PGCONNECT_TIMEOUT=10 psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"
}

ensure_database() {
  ADMIN_URL=$(postgres_admin_url) || true
  case "$ADMIN_URL" in
    postgresql://* | postgres://*) ;;
    *) die_log "no PostgreSQL (scripts/postgres.sh printed no URL)" "$LOGS/postgres.log" ;;
  esac
  if [ "${SCALE_STACK_FRESH:-0}" = 1 ]; then
    say "dropping database $DATABASE (SCALE_STACK_FRESH=1)"
    psql_admin "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >>"$LOGS/postgres.log" 2>&1 \
      || die_log "could not drop $DATABASE" "$LOGS/postgres.log"
  fi
  psql_admin "$ADMIN_URL" >>"$LOGS/postgres.log" 2>&1 <<SQL || die_log "could not create database $DATABASE" "$LOGS/postgres.log"
SELECT 'CREATE DATABASE $DATABASE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DATABASE') \gexec
SQL
  # The same role and server, our database: postgresql://user:pw@host:port/DATABASE[?query]
  DATABASE_URL=$(DB="$DATABASE" "$PY" -c '
import os, sys
from urllib.parse import urlsplit, urlunsplit
u = urlsplit(sys.argv[1])
print(urlunsplit((u.scheme, u.netloc, "/" + os.environ["DB"], u.query, "")))' "$ADMIN_URL")
  psql_admin "$DATABASE_URL" -c 'SELECT 1' >/dev/null 2>>"$LOGS/postgres.log" || die_log "cannot connect to $DATABASE" "$LOGS/postgres.log"
  say "database $DATABASE ready"
}

# --- redis -----------------------------------------------------------------------------------------

ensure_redis() {
  if alive redis "redis-server" && redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    say "redis-server answers on 127.0.0.1:$REDIS_PORT (pid $(cat "$PIDS/redis.pid"))"
    return 0
  fi
  port_free "$REDIS_PORT" || die "port $REDIS_PORT is taken by another program (set SCALE_STACK_REDIS_PORT)"
  say "starting redis-server on 127.0.0.1:$REDIS_PORT (log: $LOGS/redis.log)"
  # No persistence (no RDB snapshots, no AOF): a test and bench broker. Production: see README "Scale".
  launch redis "$LOGS/redis.log" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --save "" --appendonly no --dir "$DIR" --daemonize no --loglevel notice
  for _ in $(seq 1 60); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && { say "redis-server answers (pid $(cat "$PIDS/redis.pid"))"; return 0; }
    alive redis "redis-server" || break
    sleep 0.5
  done
  tail -n 20 "$LOGS/redis.log" >&2
  die "redis-server did not answer on 127.0.0.1:$REDIS_PORT"
}

# --- the Prefect server ----------------------------------------------------------------------------

write_env() {
  local redis_url="redis://127.0.0.1:$REDIS_PORT"
  local asyncpg_url="postgresql+asyncpg://${DATABASE_URL#*://}"
  (
    umask 077
    {
      echo "# scripts/scale-stack.sh: the Prefect server's settings (secret: the database password)"
      printf '%s=%q\n' \
        PREFECT_HOME "$DIR/home" \
        PREFECT_API_URL "$API_URL" \
        PREFECT_SERVER_ANALYTICS_ENABLED "${PREFECT_SERVER_ANALYTICS_ENABLED:-false}" \
        PREFECT_SERVER_UI_ENABLED "${PREFECT_SERVER_UI_ENABLED:-false}" \
        PREFECT_SERVER_DATABASE_CONNECTION_URL "$asyncpg_url" \
        PREFECT_SERVER_DATABASE_MIGRATE_ON_START false \
        PREFECT_SERVER_REGISTER_BLOCKS_ON_START false \
        PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE "${PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE:-10}" \
        PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW "${PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW:-20}" \
        PREFECT_SERVER_EVENTS_MESSAGING_BROKER prefect_redis.messaging \
        PREFECT_SERVER_EVENTS_MESSAGING_CACHE prefect_redis.messaging \
        PREFECT_SERVER_EVENTS_CAUSAL_ORDERING prefect_redis.ordering \
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE prefect_redis.lease_storage \
        PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE prefect_redis.cleanup_queue \
        PREFECT_REDIS_MESSAGING_HOST 127.0.0.1 \
        PREFECT_REDIS_MESSAGING_PORT "$REDIS_PORT" \
        PREFECT_REDIS_MESSAGING_DB 0 \
        PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL "$redis_url/0" \
        PREFECT_SERVER_DOCKET_URL "$redis_url/1" \
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE "${PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE:-100}" \
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE "${PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE:-500}" \
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL "${PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL:-1}" \
        PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE "${PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE:-100}" \
        SCALE_STACK_REDIS_URL "$redis_url/0" \
        SCALE_STACK_DATABASE "$DATABASE" \
        SCALE_STACK_DATABASE_URL "$DATABASE_URL" \
        SCALE_STACK_POSTGRES_URL "$ADMIN_URL" \
        SCALE_STACK_API_WORKERS "$API_WORKERS"
    } >"$DIR/server.env.tmp" && mv "$DIR/server.env.tmp" "$DIR/server.env"
  )
  {
    echo "# scripts/scale-stack.sh: what a worker or client needs to use this server"
    printf '%s=%q\n' PREFECT_API_URL "$API_URL"
  } >"$DIR/client.env.tmp" && mv "$DIR/client.env.tmp" "$DIR/client.env"
}

server_ready() { http_ok "$API_URL/ready"; }

ensure_server() {
  # Each process reads server.env (shell-quoted KEY=VALUE lines) and becomes the command given.
  local server_env=(bash -c 'set -a; . "$0"; set +a; exec "$@"' "$DIR/server.env")
  if alive server "prefect" && { [ "$API_WORKERS" -eq 1 ] || alive services "prefect"; } && server_ready; then
    say "the Prefect server is ready at $API_URL (pid $(cat "$PIDS/server.pid"))"
    return 0
  fi
  stop_pid server "prefect"
  stop_pid services "prefect"
  port_free "$PORT" || die "port $PORT is taken by another program (set SCALE_STACK_PORT)"
  mkdir -p "$DIR/home"
  local started=$SECONDS
  # What every server process does first, done once before any starts: several processes migrating
  # a fresh database or registering block types at the same moment fail (duplicate alembic_version,
  # duplicate block_type slug), so the server processes do neither (server.env).
  say "migrating database $DATABASE and registering block types (log: $LOGS/migrate.log)"
  "${server_env[@]}" "$PY" - >>"$LOGS/migrate.log" 2>&1 8>&- <<'PY' \
    || die_log "migrating the Prefect database failed" "$LOGS/migrate.log"
import asyncio

import prefect.plugins
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration


async def main() -> None:
    db = provide_database_interface()
    await db.create_db()  # alembic upgrade to head, as `prefect server database upgrade -y`
    prefect.plugins.load_prefect_collections()  # prefect-redis's block types too, as the server
    async with await db.session() as session:
        await run_block_auto_registration(session=session)
    print("migrated and registered block types")


asyncio.run(main())
PY
  if [ "$API_WORKERS" -gt 1 ]; then
    say "starting the Prefect API ($API_WORKERS worker processes) at $API_URL and its services (logs: $LOGS/)"
    launch server "$LOGS/server.log" "${server_env[@]}" "$VENV/bin/prefect" server start --host 127.0.0.1 \
      --port "$PORT" --workers "$API_WORKERS"
    launch services "$LOGS/services.log" "${server_env[@]}" "$VENV/bin/prefect" server services start
  else
    say "starting the Prefect server at $API_URL (log: $LOGS/server.log)"
    launch server "$LOGS/server.log" "${server_env[@]}" "$VENV/bin/prefect" server start --host 127.0.0.1 --port "$PORT"
  fi
  for _ in $(seq 1 $((WAIT * 2))); do
    if server_ready; then
      say "the Prefect server is ready at $API_URL after $((SECONDS - started))s (pid $(cat "$PIDS/server.pid"))"
      return 0
    fi
    alive server "prefect" || break
    [ "$API_WORKERS" -gt 1 ] && ! alive services "prefect" && break
    sleep 0.5
  done
  tail -n 30 "$LOGS/server.log" >&2
  [ -f "$LOGS/services.log" ] && tail -n 30 "$LOGS/services.log" >&2
  stop_pid server "prefect"
  stop_pid services "prefect"
  die "the Prefect server exited, or did not become ready within ${WAIT}s (logs above)"
}

# --- commands --------------------------------------------------------------------------------------

cmd_start() {
  mkdir -p "$DIR" "$PIDS" "$LOGS" && chmod 700 "$DIR" || die "cannot create $DIR"
  exec 8>>"$DIR/lock"
  flock -w 300 8 || die "another scale-stack.sh holds $DIR/lock"
  do_install
  ensure_database
  ensure_redis
  write_env
  ensure_server
  say "up: $API_URL (env: $DIR/client.env; eval \"\$(bash scripts/scale-stack.sh env)\")"
}

cmd_stop() {
  [ -d "$PIDS" ] || { say "nothing started in $DIR"; return 0; }
  exec 8>>"$DIR/lock"
  flock -w 300 8 || die "another scale-stack.sh holds $DIR/lock"
  stop_pid services "prefect"
  stop_pid server "prefect"
  stop_pid redis "redis-server"
  if [ "${SCALE_STACK_DROP:-0}" = 1 ] && [ -f "$DIR/server.env" ]; then
    # The database and the role `start` used, as it recorded them.
    local database admin
    database=$( (. "$DIR/server.env" && echo "$SCALE_STACK_DATABASE") )
    admin=$( (. "$DIR/server.env" && echo "$SCALE_STACK_POSTGRES_URL") )
    say "dropping database $database (SCALE_STACK_DROP=1)"
    psql_admin "$admin" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >>"$LOGS/postgres.log" 2>&1 \
      || say "could not drop $database (see $LOGS/postgres.log)"
  fi
  say "stopped"
}

cmd_env() {
  [ -f "$DIR/client.env" ] || die "no $DIR/client.env: run 'bash scripts/scale-stack.sh start' first"
  sed -n 's/^\([A-Z_][A-Z0-9_]*=\)/export \1/p' "$DIR/client.env"
}

cmd_status() {
  local ok=0
  for name in redis server services; do
    [ -f "$PIDS/$name.pid" ] || continue
    if alive "$name" "$([ $name = redis ] && echo redis-server || echo prefect)"; then
      say "$name runs (pid $(cat "$PIDS/$name.pid"))"
    else
      say "$name is not running (stale pid file)"
    fi
  done
  if server_ready; then say "the Prefect server is ready at $API_URL"; else say "no ready Prefect server at $API_URL"; ok=1; fi
  return $ok
}

case "${1:-}" in
  install) do_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|env|status" >&2; exit 2 ;;
esac
