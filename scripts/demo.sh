#!/usr/bin/env bash
# The main job on one machine: a local Prefect server on SQLite, a demo fleet of HTTP agents on
# 127.0.0.1 (one fails, one's port is closed), and the monitor deployment served against it every
# 30 s (serve bootstraps first: zombie guard and "monitor stalled" armed). Ctrl-C or SIGTERM stops
# everything this script started, newest first; serve first settles its in-flight runs.
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
# The demo touches only what it owns: it lists only containers of its own scope (none), and
# registers nobody by container label, whatever the shell that started it says.
export AGENTWATCH_DOCKER_SCOPE="agentwatch.scope=demo"
export AGENTWATCH_DOCKER_LABELS=false

pids=()
grace=()  # seconds each process gets after SIGTERM before SIGKILL
cleanup() {
  trap - EXIT INT TERM
  echo; echo "agentwatch demo: stopping (pids ${pids[*]:-none})"
  # Newest first: serve settles its in-flight runs (each gets a final state, which frees the
  # monitor's concurrency slot; a run's process may take up to 30 s to stop) and pauses its
  # deployments while the server is still up to record it.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    pid=${pids[$i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 $((${grace[$i]} * 4))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

echo "agentwatch demo: starting the Prefect server on 127.0.0.1:$PORT (log: $STATE/server.log)"
# A Pending run's hold on a deployment's concurrency slot (its lease) lasts 120 s, not Prefect's
# 300 s: the backstop when a run's process dies before its flow starts and nothing settles it.
# Not shorter than the zombie guard's 75 s window, so the guard (or serve's orphan sweep) frees a
# slot before the lease reaper does: Prefect 3.8 releases a reaped slot a second time when the
# run is marked Crashed later, which would let two monitor runs overlap. (The monitor deployment
# sets the same 120 s itself, in deployments/definitions.py.)
PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION=120 \
  .venv/bin/prefect server start --host 127.0.0.1 --port "$PORT" > "$STATE/server.log" 2>&1 &
pids+=($!); grace+=(10)
echo "agentwatch demo: starting the demo agents on 127.0.0.1:$AGENTS_PORT (log: $STATE/agents.log)"
.venv/bin/python -m agentwatch.demo --port "$AGENTS_PORT" --write-registry "$STATE/demo-fleet.yaml" \
  > "$STATE/agents.log" 2>&1 &
pids+=($!); grace+=(10)

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
  Ctrl-C stops the server, the agents and the monitor (in-flight runs are settled first).

MSG
# Serve bootstraps first (deployments, the zombie guard, "monitor stalled" armed at once) and gives
# its runs a 30 s flow-run heartbeat. It is started with SIGINT ignored (a background job), so
# Ctrl-C reaches it only as the SIGTERM of cleanup(), after which it settles its runs.
.venv/bin/python -m deployments.serve "$STATE/demo-fleet.yaml" --interval 30 &
pids+=($!); grace+=(45)
wait "${pids[-1]}"
