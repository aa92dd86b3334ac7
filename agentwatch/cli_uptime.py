"""CLI subcommand for availability, registered into `agentwatch.cli`.

    agentwatch uptime [--json] [--registry FILE]

Every agent's uptime over 24 h, 7 d and 30 d (time healthy / time monitored, agentwatch.uptime),
read from the state store's transition log; no Prefect API involved, so it answers at once.
`--registry` defaults to $AGENTWATCH_REGISTRY, else fleet.yaml, as for `status`.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from .cli import PARSER_EXTENSIONS, command, print_rows
from .cli_heartbeat import _default_registry
from .maintenance import read_uptime
from .registry import load_registry
from .settings import get_settings
from .store import StateStore
from .uptime import WINDOWS, percent_text, span_text

COLUMNS = ("id", "state", *(f"uptime_{label}" for label, _ in WINDOWS), "monitored_30d", "name")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("uptime", help="every agent's uptime over 24h, 7d and 30d, from the transition log")
    p.add_argument("--json", action="store_true", help="print a JSON list of agents (percents and seconds)")
    p.add_argument("--registry", default=_default_registry(), help="registry file (default $AGENTWATCH_REGISTRY)")


PARSER_EXTENSIONS.append(add_parsers)


@command("uptime")
def _uptime(args: argparse.Namespace) -> int:
    registry = load_registry(args.registry)

    async def read() -> list[dict[str, Any]]:
        async with StateStore(get_settings().resolved_database_url()) as store:
            return await read_uptime(store, registry, datetime.now(UTC))

    rows = asyncio.run(read())
    print_rows(rows if args.json else [_display(r) for r in rows], as_json=args.json, columns=COLUMNS)
    return 0


def _display(row: dict[str, Any]) -> dict[str, Any]:
    shown = {f"uptime_{label}": percent_text(row[f"uptime_{label}"]) for label, _ in WINDOWS}
    return {**row, **shown, "monitored_30d": span_text(timedelta(seconds=row["monitored_30d_s"]))}
