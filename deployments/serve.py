"""The local all-in-one entry point: serve agentwatch's deployments from this process.

    python -m deployments.serve REGISTRY [--interval 30]

Serving needs no work pool or worker: this process polls the Prefect server (PREFECT_API_URL) for
scheduled and manual runs of its deployments and runs them itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from agentwatch.registry import load_registry
from flows.monitor import monitor_fleet
from flows.operator import pause_deployment, resume_deployment, status_deployment
from flows.reconcile import reconcile_deployment
from flows.shutdown import shutdown_deployment

MONITOR_CONCURRENCY = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def monitor_deployment(registry: str, interval: float):
    """The monitor on an interval schedule; overlapping runs are cancelled, never queued."""
    return monitor_fleet.to_deployment(
        name="monitor",
        interval=interval,
        parameters={"registry_path": registry, "force": False},
        concurrency_limit=MONITOR_CONCURRENCY,
        tags=["agentwatch"],
        description="Probe every agent that is due, apply the health policy, record transitions.",
    )


# Other modules append factories here (reconcile, shutdown, operator flows): each takes
# (registry path) and returns a deployment.
EXTRA_DEPLOYMENTS: list = []
EXTRA_DEPLOYMENTS.extend([reconcile_deployment, shutdown_deployment])
EXTRA_DEPLOYMENTS.extend([pause_deployment, resume_deployment, status_deployment])


def build_deployments(registry: str, interval: float) -> list:
    return [monitor_deployment(registry, interval), *(make(registry) for make in EXTRA_DEPLOYMENTS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("registry", help="registry YAML file")
    parser.add_argument("--interval", type=float, default=30.0, help="monitor schedule, seconds (default 30)")
    args = parser.parse_args()
    registry = str(Path(args.registry).resolve())
    load_registry(registry)  # reject a bad registry before anything is served
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
    serve(*build_deployments(registry, args.interval))


if __name__ == "__main__":
    main()
