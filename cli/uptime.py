"""`agentwatch uptime [--json] [--registry FILE]`: every agent's uptime over 24 h, 7 d and 30 d
(time healthy / time monitored, agentwatch.uptime), read from the state store's transition log.
`--registry` defaults to $AGENTWATCH_REGISTRY, else fleet.yaml, as for `status`."""

from __future__ import annotations

import argparse

from agentwatch.status import read_uptime, uptime_display
from agentwatch.uptime import WINDOWS

from .reads import add_read_arguments, run_read

__all__ = ["UPTIME_COLUMNS", "add_uptime_arguments", "run_uptime"]

UPTIME_COLUMNS = ("id", "state", *(f"uptime_{label}" for label, _ in WINDOWS), "monitored_30d", "name")


def add_uptime_arguments(p: argparse.ArgumentParser) -> None:
    add_read_arguments(p, "print a JSON list of agents (percents and seconds)")


def run_uptime(args: argparse.Namespace) -> int:
    return run_read(args, read_uptime, uptime_display, UPTIME_COLUMNS)
