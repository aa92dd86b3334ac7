"""CLI subcommands for heartbeat agents and operators, registered into `agentwatch.cli`.

    agentwatch heartbeat-server REGISTRY [--host 127.0.0.1] [--port 8787]
    agentwatch pause ID [--until TIME] [--sticky] [--reason TEXT] [--registry FILE]
    agentwatch resume ID [--registry FILE]
    agentwatch status [--json] [--registry FILE]

`pause` and `resume` run the Prefect flows of the same name (so the change is an event and an
artifact version, as from the UI); `status` only reads the state store, so it answers at once.
`--registry` defaults to $AGENTWATCH_REGISTRY, else fleet.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from .cli import PARSER_EXTENSIONS, command, print_rows
from .maintenance import parse_until, read_status, require_agent
from .registry import load_registry
from .settings import get_settings
from .store import StateStore
from .uptime import percent_text

STATUS_COLUMNS = ("id", "state", "since", "last_beat", "seconds_since", "missed", "paused", "uptime_24h", "reason")


def _default_registry() -> str:
    return os.environ.get("AGENTWATCH_REGISTRY") or "fleet.yaml"


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("heartbeat-server", help="serve the heartbeat push endpoint (POST /ping/ID)")
    p.add_argument("registry")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port to listen on (default 8787)")
    p.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")

    p = sub.add_parser("pause", help="pause an agent: not probed, not alerted on, until resumed")
    p.add_argument("agent_id")
    p.add_argument("--until", help="end the pause by itself: a duration (2h) or an ISO time (UTC unless given)")
    p.add_argument("--sticky", action="store_true", help="ignore the agent's heartbeats until resumed")
    p.add_argument("--reason", default="", help="shown in the status and the event")
    p.add_argument("--registry", default=_default_registry(), help="registry file (default $AGENTWATCH_REGISTRY)")

    p = sub.add_parser("resume", help="end an agent's pause; its counters and timers restart")
    p.add_argument("agent_id")
    p.add_argument("--registry", default=_default_registry(), help="registry file (default $AGENTWATCH_REGISTRY)")

    p = sub.add_parser("status", help="every agent's state, last beat, missed beats, pause and uptime")
    p.add_argument("--json", action="store_true", help="print a JSON list of agents")
    p.add_argument("--registry", default=_default_registry(), help="registry file (default $AGENTWATCH_REGISTRY)")


PARSER_EXTENSIONS.append(add_parsers)


@command("heartbeat-server")
def _heartbeat_server(args: argparse.Namespace) -> int:
    from tasks.heartbeats import PrefectBatchSink, load_secrets

    from .heartbeat.intake import resolve_credentials
    from .heartbeat.server import ServerConfig, create_app, serve

    # Prefect may have configured the root logger already (at WARNING); ours still logs at INFO.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("agentwatch").setLevel(logging.INFO)
    registry = load_registry(args.registry)
    specs = {a.id: a.probe.heartbeat for a in registry.agents if a.probe is not None and a.probe.heartbeat}
    secret_names = [s.token_secret for s in specs.values() if s is not None and s.token_secret and not s.token_env]
    credentials = resolve_credentials(registry, os.environ, load_secrets(secret_names) if secret_names else {})
    open_ids = [i for i in specs if i not in credentials.tokens and i not in credentials.unavailable]
    if open_ids:
        logging.getLogger(__name__).warning(
            "%d agent(s) have no token configured and accept pings without one: %s",
            len(open_ids),
            ", ".join(open_ids[:10]),
        )
    settings = get_settings()
    config = ServerConfig.from_settings(settings)
    app = create_app(
        registry,
        StateStore(settings.resolved_database_url()),
        credentials,
        config,
        sink=PrefectBatchSink(f"{args.host}-{args.port}"),
    )
    # Under limits (a request deadline, a connection cap below the open-file limit): slow clients
    # cannot take the server down (agentwatch/heartbeat/limits.py).
    serve(app, args.host, args.port, config, access_log=args.access_log)
    return 0


@command("pause")
def _pause(args: argparse.Namespace) -> int:
    require_agent(load_registry(args.registry), args.agent_id, args.registry)
    try:
        until = parse_until(args.until, datetime.now(UTC)) if args.until else None
    except ValueError as exc:
        print(f"error: --until: {exc}", file=sys.stderr)
        return 2
    from flows.operator import pause_agent

    row = asyncio.run(
        pause_agent(  # type: ignore[arg-type]
            args.agent_id, until=until, sticky=args.sticky, reason=args.reason, registry_path=args.registry
        )
    )
    print_rows([_display(row)], as_json=False, columns=STATUS_COLUMNS)
    return 0


@command("resume")
def _resume(args: argparse.Namespace) -> int:
    require_agent(load_registry(args.registry), args.agent_id, args.registry)
    from flows.operator import resume_agent

    row = asyncio.run(resume_agent(args.agent_id, registry_path=args.registry))  # type: ignore[arg-type]
    print_rows([_display(row)], as_json=False, columns=STATUS_COLUMNS)
    return 0


@command("status")
def _status(args: argparse.Namespace) -> int:
    registry = load_registry(args.registry)

    async def read() -> list[dict[str, Any]]:
        async with StateStore(get_settings().resolved_database_url()) as store:
            return await read_status(store, registry, datetime.now(UTC))

    rows = asyncio.run(read())
    print_rows(rows if args.json else [_display(r) for r in rows], as_json=args.json, columns=STATUS_COLUMNS)
    return 0


def _display(row: dict[str, Any]) -> dict[str, Any]:
    """The pause as one table cell: sticky, until when, or plain yes; uptime as a percent."""
    paused = ""
    if row["paused"]:
        paused = ("sticky " if row["sticky"] else "") + (
            f"until {row['paused_until']}" if row["paused_until"] else "yes"
        )
    return {**row, "paused": paused, "uptime_24h": percent_text(row.get("uptime_24h"))}
