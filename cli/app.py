"""The `agentwatch` command: one table of its commands, a parser built from it, and `main`.

Each command group is a module with, per command, `add_<name>_arguments(parser)` and
`run_<name>(args) -> int`; adding a command is one line in COMMANDS. Commands that run flows
import `flows/` lazily, so `validate` and the store reads never start Prefect.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from agentwatch.errors import AgentwatchError, RegistryError

from . import alerts, check, docker, heartbeat, operator, status, uptime

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: tuple[Command, ...] = (
    Command(
        "validate",
        "check a registry file; exit 1 listing every problem",
        check.add_validate_arguments,
        check.run_validate,
    ),
    Command("check", "run one monitor cycle now and print the fleet", check.add_check_arguments, check.run_check),
    Command(
        "bootstrap",
        "create the deployments, notification blocks and automations on Prefect",
        alerts.add_bootstrap_arguments,
        alerts.run_bootstrap,
    ),
    Command(
        "reconcile",
        "record container exits, remove orphans, restart unhealthy agents",
        docker.add_reconcile_arguments,
        docker.run_reconcile,
    ),
    Command(
        "shutdown",
        "stop every managed container gracefully and record its agent stopped",
        docker.add_shutdown_arguments,
        docker.run_shutdown,
    ),
    Command(
        "heartbeat-server",
        "serve the heartbeat push endpoint (POST /ping/ID)",
        heartbeat.add_heartbeat_server_arguments,
        heartbeat.run_heartbeat_server,
    ),
    Command(
        "pause",
        "pause an agent: not probed, not alerted on, until resumed",
        operator.add_pause_arguments,
        operator.run_pause,
    ),
    Command(
        "resume",
        "end an agent's pause; its counters and timers restart",
        operator.add_resume_arguments,
        operator.run_resume,
    ),
    Command(
        "status",
        "every agent's state, last beat, missed beats, pause and uptime",
        status.add_status_arguments,
        status.run_status,
    ),
    Command(
        "uptime",
        "every agent's uptime over 24h, 7d and 30d, from the transition log",
        uptime.add_uptime_arguments,
        uptime.run_uptime,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentwatch", description="Keep a fleet of agents healthy with Prefect.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = next(c.run for c in COMMANDS if c.name == args.command)
    code = 1
    try:
        code = run(args)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except AgentwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        if "flows.runtime" in sys.modules:  # a flow ran: never wait again for a dead API at exit
            sys.modules["flows.runtime"].exit_now(code)
    return code
