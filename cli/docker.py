"""CLI commands for Docker-backed agents:

    agentwatch reconcile REGISTRY [--dry-run] [--orphan-min-age 60s] [--no-restart-unhealthy]
                                  [--keep-orphans] [--agent ID ...] [--json]
    agentwatch shutdown REGISTRY [--leave-running] [--stop-timeout 10s] [--agent ID ...] [--json]

Both run the Prefect flows of the same name, like `check`: against the server in PREFECT_API_URL,
else an ephemeral local API, so each run has its artifacts and events as from the UI.
"""

from __future__ import annotations

import argparse
import asyncio

from agentwatch.durations import parse_duration
from agentwatch.registry import load_registry

from .output import print_rows

__all__ = ["add_reconcile_arguments", "add_shutdown_arguments", "run_reconcile", "run_shutdown"]

RECONCILE_COLUMNS = ("action", "agent", "container", "state", "outcome", "reason")
SHUTDOWN_COLUMNS = ("agent", "container", "status", "outcome", "reason")


def _duration(text: str) -> str:
    parse_duration(text)  # reject a bad duration before any Prefect start-up
    return text


def add_reconcile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--orphan-min-age", type=_duration, default="60s", help="leave younger orphans alone (60s)")
    p.add_argument("--no-restart-unhealthy", action="store_true", help="restart nothing")
    p.add_argument("--keep-orphans", action="store_true", help="remove no orphan")
    p.add_argument("--agent", action="append", dest="agent_ids", metavar="ID", help="only this agent (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON list of actions")


def add_shutdown_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry")
    p.add_argument("--leave-running", action="store_true", help="stop nothing; record that the fleet was left running")
    p.add_argument("--stop-timeout", type=_duration, default="10s", help="SIGTERM, then SIGKILL after this (10s)")
    p.add_argument("--agent", action="append", dest="agent_ids", metavar="ID", help="only this agent (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON list of containers")


def run_reconcile(args: argparse.Namespace) -> int:
    load_registry(args.registry)  # fail fast, before any Prefect start-up
    from flows.reconcile import reconcile_fleet

    rows = asyncio.run(
        reconcile_fleet(
            registry_path=args.registry,
            agent_ids=args.agent_ids,
            dry_run=args.dry_run,
            remove_orphans=not args.keep_orphans,
            restart_unhealthy=not args.no_restart_unhealthy,
            orphan_min_age=args.orphan_min_age,
        )
    )
    print_rows(rows, as_json=args.json, columns=RECONCILE_COLUMNS)
    return 1 if any(str(row.get("outcome", "")).startswith("failed") for row in rows) else 0


def run_shutdown(args: argparse.Namespace) -> int:
    load_registry(args.registry)
    from flows.shutdown import shutdown_fleet

    rows = asyncio.run(
        shutdown_fleet(
            registry_path=args.registry,
            leave_running=args.leave_running,
            stop_timeout=args.stop_timeout,
            agent_ids=args.agent_ids,
        )
    )
    print_rows(rows, as_json=args.json, columns=SHUTDOWN_COLUMNS)
    return 1 if any(row.get("outcome") == "failed" for row in rows) else 0
