"""The shape `status` and `uptime` share: load the registry, open the state store, read rows,
print them (JSON or a table). No Prefect API involved, so they answer at once."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from agentwatch.registry import Registry, load_registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore

from .output import print_rows

__all__ = ["Reader", "add_read_arguments", "add_registry_option", "default_registry", "run_read"]

Row = dict[str, Any]
Reader = Callable[[StateStore, Registry, datetime], Awaitable[list[Row]]]


def default_registry() -> str:
    """The registry of commands that do not name one: $AGENTWATCH_REGISTRY, else fleet.yaml."""
    return os.environ.get("AGENTWATCH_REGISTRY") or "fleet.yaml"


def add_registry_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", default=default_registry(), help="registry file (default $AGENTWATCH_REGISTRY)")


def add_read_arguments(p: argparse.ArgumentParser, json_help: str) -> None:
    p.add_argument("--json", action="store_true", help=json_help)
    add_registry_option(p)


def run_read(
    args: argparse.Namespace, read: Reader, display: Callable[[Mapping[str, Any]], Row], columns: Sequence[str]
) -> int:
    """Print what `read` finds in the store now: every field as JSON, or `display`ed as a table."""
    registry = load_registry(args.registry)

    async def rows() -> list[Row]:
        async with StateStore(get_settings().resolved_database_url()) as store:
            return await read(store, registry, datetime.now(UTC))

    found = asyncio.run(rows())
    print_rows(found if args.json else [display(r) for r in found], as_json=args.json, columns=columns)
    return 0
