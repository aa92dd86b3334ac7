#!/usr/bin/env bash
# The main job on one machine: a local Prefect server on SQLite, a demo fleet of HTTP agents on
# 127.0.0.1 (one fails, one's port is closed), and the monitor deployment served against it every
# 30 s. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

STATE=.agentwatch
PORT="${AGENTWATCH_DEMO_PREFECT_PORT:-4200}"
AGENTS_PORT="${AGENTWATCH_DEMO_AGENTS_PORT:-8780}"
mkdir -p "$STATE"
export PREFECT_HOME="$PWD/$STATE/prefect"               # the server's SQLite database lives here
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false           # no network here beyond package registries
export AGENTWATCH_DATABASE_URL="${AGENTWATCH_DATABASE_URL:-sqlite:///$PWD/$STATE/state.db}"
export PREFECT_RUNNER_POLL_FREQUENCY=2

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "agentwatch demo: stopping (pids ${pids[*]:-none})"
  # Newest first: the monitor pauses its deployments on the server before the server stops.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    pid=${pids[$i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

echo "agentwatch demo: starting the Prefect server on 127.0.0.1:$PORT (log: $STATE/server.log)"
.venv/bin/prefect server start --host 127.0.0.1 --port "$PORT" > "$STATE/server.log" 2>&1 &
pids+=($!)
echo "agentwatch demo: starting the demo agents on 127.0.0.1:$AGENTS_PORT (log: $STATE/agents.log)"
.venv/bin/python -m agentwatch.demo --port "$AGENTS_PORT" --write-registry "$STATE/demo-fleet.yaml" \
  > "$STATE/agents.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 120); do
  if .venv/bin/python -c "import httpx,sys; sys.exit(httpx.get('$PREFECT_API_URL/health', timeout=1).status_code != 200)" 2>/dev/null \
     && [ -s "$STATE/demo-fleet.yaml" ]; then ready=1; break; fi
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a demo process exited; see $STATE/*.log"; exit 1; }; done
  sleep 1
done
[ "${ready:-}" = 1 ] || { echo "the Prefect server did not answer within 120 s; see $STATE/server.log"; exit 1; }

.venv/bin/agentwatch validate "$STATE/demo-fleet.yaml"
cat <<MSG

  agentwatch demo is up. Open http://127.0.0.1:$PORT in a browser:
    - Deployments > monitor-fleet/monitor: scheduled every 30 s ("Run" starts one now)
    - Runs: each monitor run; its Artifacts tab holds the fleet table
    - Artifacts: agent-fail-tester, agent-down-0 ... one version per state change
    - Events: agentwatch.agent.degraded / agentwatch.agent.unhealthy on agentwatch.agent.<id>
  fail-tester answers HTTP 500 and down-0's port is closed: both go degraded, then unhealthy
  on the third run (about 90 s). From another shell, with the same environment:
    PREFECT_API_URL=$PREFECT_API_URL AGENTWATCH_DATABASE_URL=$AGENTWATCH_DATABASE_URL \\
      .venv/bin/agentwatch check $STATE/demo-fleet.yaml --due-only
  Ctrl-C stops the server, the agents and the monitor.

MSG
.venv/bin/python -m deployments.serve "$STATE/demo-fleet.yaml" --interval 30 &
pids+=($!)
wait "${pids[-1]}"
