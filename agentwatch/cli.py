"""The `agentwatch` command line.

`validate` needs nothing but the registry file. The other commands run Prefect flows: against the
server in PREFECT_API_URL when one is configured, else against an ephemeral local API that Prefect
starts for the run. This is the one module of the package that reaches into `flows/`, lazily, so
the domain package itself stays free of Prefect imports.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import AgentwatchError, RegistryError
from .registry import load_registry

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return register


@command("validate")
def _validate(args: argparse.Namespace) -> int:
    registry = load_registry(args.registry)
    unmanaged = [a for a in registry.agents if a.unmanaged_reason]
    print(
        f"{args.registry}: OK, {len(registry.agents)} agent(s)"
        + (f", {len(unmanaged)} listed but not probed" if unmanaged else "")
    )
    for agent in unmanaged:
        print(f"  - {agent.id}: {agent.unmanaged_reason}")
    return 0


@command("check")
def _check(args: argparse.Namespace) -> int:
    load_registry(args.registry)  # fail fast, before any Prefect start-up
    from flows.runtime import bounded_client_retries, run_bounded

    bounded_client_retries()
    from flows.monitor import monitor_fleet

    rows = run_bounded(monitor_fleet(args.registry, force=not args.due_only))  # type: ignore[arg-type]
    print_rows(rows, as_json=args.json, columns=("id", "state", "since", "failures", "latency_ms", "reason"))
    return 0


def print_rows(rows: Sequence[dict[str, Any]], *, as_json: bool, columns: Sequence[str]) -> None:
    """Rows as a JSON list, or as a table for people."""
    if as_json:
        json.dump(list(rows), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in columns:
        # Ids and times never wrap; the reason takes what width is left.
        table.add_column(column, overflow="fold", no_wrap=column != "reason")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(width=max(120, Console().width)).print(table)


def _cell(value: Any) -> str:
    """Table text: ISO timestamps shortened to `YYYY-MM-DD HH:MM:SS` (UTC, as stored)."""
    if value is None:
        return ""
    text = str(value)
    if len(text) >= 19 and text[10:11] == "T":
        try:
            return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            pass
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentwatch", description="Keep a fleet of agents healthy with Prefect.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a registry file; exit 1 listing every problem")
    p.add_argument("registry")

    p = sub.add_parser("check", help="run one monitor cycle now and print the fleet")
    p.add_argument("registry")
    p.add_argument("--json", action="store_true", help="print a JSON list of agents")
    p.add_argument(
        "--due-only", action="store_true", help="probe only agents whose interval/backoff has run out (default: all)"
    )
    for extend in PARSER_EXTENSIONS:
        extend(sub)
    return parser


# Other modules add their subcommands here (Docker, heartbeat, alerts) without touching main().
PARSER_EXTENSIONS: list[Callable[[Any], None]] = []

from . import cli_alerts, cli_docker, cli_heartbeat, cli_uptime  # noqa: E402, F401 - after COMMANDS/PARSER_EXTENSIONS, which they extend


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = 1
    try:
        code = COMMANDS[args.command](args)
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


if __name__ == "__main__":
    # `python -m agentwatch.cli`: run the package's module, where the extensions registered their
    # commands, not this __main__ copy of it.
    from agentwatch.cli import main as package_main

    sys.exit(package_main())
