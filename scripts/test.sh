#!/usr/bin/env bash
# Set up and run every check: lint, types, unit and integration tests (a Prefect test server,
# HTTP/TCP servers on 127.0.0.1, a real Docker engine, PostgreSQL). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# The Docker tests need an engine: install and start one when we can. Without one they skip
# loudly, unless AGENTWATCH_REQUIRE_DOCKER is set (CI sets it), in which case they fail.
if ! bash scripts/ensure-docker.sh; then
  echo "agentwatch: WARNING: no Docker engine could be started; Docker tests will skip" \
       "(or fail, with AGENTWATCH_REQUIRE_DOCKER set)" >&2
fi
# The state store tests run on SQLite and on PostgreSQL: start this machine's cluster and make a
# role and database for them (scripts/postgres.sh prints the URL; each test makes and drops a
# database of its own). Without one the PostgreSQL cases skip loudly, unless
# AGENTWATCH_REQUIRE_POSTGRES is set (CI sets it), in which case they fail. A URL already exported
# in AGENTWATCH_TEST_POSTGRES_URL is used as it is.
if [ -z "${AGENTWATCH_TEST_POSTGRES_URL:-}" ]; then
  if postgres_url=$(bash scripts/postgres.sh); then
    export AGENTWATCH_TEST_POSTGRES_URL="$postgres_url"
  else
    echo "agentwatch: WARNING: no PostgreSQL could be started; the PostgreSQL store tests will skip" \
         "(or fail, with AGENTWATCH_REQUIRE_POSTGRES set)" >&2
  fi
fi
echo "agentwatch: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "agentwatch: mypy"
.venv/bin/mypy
echo "agentwatch: import contracts"
.venv/bin/lint-imports --no-cache
echo "agentwatch: pytest"
exec .venv/bin/pytest "$@"
