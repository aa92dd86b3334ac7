"""`agentwatch validate REGISTRY` and `agentwatch check REGISTRY [--json] [--due-only]`.

`validate` needs nothing but the registry file. `check` runs one monitor cycle (the
`monitor-fleet` flow) against the server in PREFECT_API_URL, else an ephemeral local API that
Prefect starts for the run, and prints the fleet.
"""

from __future__ import annotations

import argparse

from agentwatch.registry import load_registry
from agentwatch.render import fleet_columns

from .output import print_rows

__all__ = ["CHECK_COLUMNS", "add_check_arguments", "add_validate_arguments", "run_check", "run_validate"]

# The reason before the time and the latency (agentwatch.render.fleet_columns).
CHECK_COLUMNS = tuple(fleet_columns(("id", "state", "since", "failures", "latency_ms", "reason")))


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry")


def run_validate(args: argparse.Namespace) -> int:
    registry = load_registry(args.registry)
    unmanaged = [a for a in registry.agents if a.unmanaged_reason]
    print(
        f"{args.registry}: OK, {len(registry.agents)} agent(s)"
        + (f", {len(unmanaged)} listed but not probed" if unmanaged else "")
    )
    for agent in unmanaged:
        print(f"  - {agent.id}: {agent.unmanaged_reason}")
    return 0


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry")
    p.add_argument("--json", action="store_true", help="print a JSON list of agents")
    p.add_argument(
        "--due-only", action="store_true", help="probe only agents whose interval/backoff has run out (default: all)"
    )


def run_check(args: argparse.Namespace) -> int:
    load_registry(args.registry)  # fail fast, before any Prefect start-up
    from flows.runtime import bounded_client_retries, run_bounded

    bounded_client_retries()  # before Prefect is imported
    from flows.monitor import monitor_fleet

    rows = run_bounded(monitor_fleet(args.registry, force=not args.due_only))
    print_rows(rows, as_json=args.json, columns=CHECK_COLUMNS)
    return 0
