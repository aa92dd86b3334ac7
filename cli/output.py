"""What every command prints: rows as a JSON list for programs, or as a table for people
(agentwatch.render.text_table: the reason column wraps, nothing is cut off)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from agentwatch.render import text_table

__all__ = ["print_rows"]

MIN_WIDTH = 120  # piped output (no terminal) is as wide as this


def print_rows(rows: Sequence[Mapping[str, Any]], *, as_json: bool, columns: Sequence[str]) -> None:
    """Rows as a JSON list (every field), or as a table of `columns`."""
    if as_json:
        json.dump([dict(row) for row in rows], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    width = max(MIN_WIDTH, shutil.get_terminal_size((MIN_WIDTH, 24)).columns)
    sys.stdout.write(text_table(rows, columns, width=width))
