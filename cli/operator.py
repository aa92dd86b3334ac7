"""`agentwatch pause ID [--until TIME] [--sticky] [--reason TEXT] [--registry FILE]` and
`agentwatch resume ID [--registry FILE]`.

Both run the Prefect flows of the same name (flows/operator.py), so the change is an event and an
artifact version, as from the UI, and print the agent's status row.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from agentwatch.maintenance import parse_until, require_agent
from agentwatch.registry import load_registry
from agentwatch.status import status_display

from .output import print_rows
from .reads import add_registry_option
from .status import STATUS_COLUMNS

__all__ = ["add_pause_arguments", "add_resume_arguments", "run_pause", "run_resume"]


def add_pause_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent_id")
    p.add_argument("--until", help="end the pause by itself: a duration (2h) or an ISO time (UTC unless given)")
    p.add_argument("--sticky", action="store_true", help="ignore the agent's heartbeats until resumed")
    p.add_argument("--reason", default="", help="shown in the status and the event")
    add_registry_option(p)


def run_pause(args: argparse.Namespace) -> int:
    require_agent(load_registry(args.registry), args.agent_id, args.registry)
    try:
        until = parse_until(args.until, datetime.now(UTC)) if args.until else None
    except ValueError as exc:
        print(f"error: --until: {exc}", file=sys.stderr)
        return 2
    from flows.operator import pause_agent

    row = asyncio.run(
        pause_agent(args.agent_id, until=until, sticky=args.sticky, reason=args.reason, registry_path=args.registry)
    )
    print_rows([status_display(row)], as_json=False, columns=STATUS_COLUMNS)
    return 0


def add_resume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent_id")
    add_registry_option(p)


def run_resume(args: argparse.Namespace) -> int:
    require_agent(load_registry(args.registry), args.agent_id, args.registry)
    from flows.operator import resume_agent

    row = asyncio.run(resume_agent(args.agent_id, registry_path=args.registry))
    print_rows([status_display(row)], as_json=False, columns=STATUS_COLUMNS)
    return 0
