"""`agentwatch status [--json] [--registry FILE]`: every agent's state, last beat, missed beats,
pause, uptime and reason, read from the state store (agentwatch.status)."""

from __future__ import annotations

import argparse

from agentwatch.render import fleet_columns
from agentwatch.status import read_status, status_display

from .reads import add_read_arguments, run_read

__all__ = ["STATUS_COLUMNS", "add_status_arguments", "run_status"]

# The reason before the times and the pause, which are long (agentwatch.render.fleet_columns).
STATUS_COLUMNS = tuple(
    fleet_columns(("id", "state", "since", "last_beat", "seconds_since", "missed", "paused", "uptime_24h", "reason"))
)


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    add_read_arguments(p, "print a JSON list of agents")


def run_status(args: argparse.Namespace) -> int:
    return run_read(args, read_status, status_display, STATUS_COLUMNS)
