#!/usr/bin/env bash
# Set up and run every check: lint, types, unit and integration tests (a Prefect test server,
# HTTP/TCP servers on 127.0.0.1, a real Docker engine). Extra arguments go to pytest.
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
echo "agentwatch: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "agentwatch: mypy"
.venv/bin/mypy
echo "agentwatch: import contracts"
.venv/bin/lint-imports --no-cache
echo "agentwatch: pytest"
exec .venv/bin/pytest "$@"
