"""The JSON path of the http probe's `json` condition, parsed when the registry is loaded.

`json: {path: "$.status", equals: "ok"}` names a small subset of JSONPath (RFC 9535): one value
at one place, no wildcards, filters or slices:

    $                  the whole document
    .name              a member of an object (letters, digits, `_` and `-`; not first a digit or `-`)
    ["any name"]       a member whose name needs quoting ('single quotes' too; `\\"` and `\\\\` escape)
    [0]  [-1]          an element of an array, counted from the end when negative

e.g. `$.checks[0].status`, `$["dotted.key"].ok`. The probe looks the path up in the body
(agentwatch.probes.conditions).
"""

from __future__ import annotations

import json
import re

__all__ = ["Step", "format_path", "parse_path"]

Step = str | int

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX = re.compile(r"-?(?:0|[1-9][0-9]*)")


def parse_path(text: str) -> tuple[Step, ...]:
    """The steps of a JSON path: member names (str) and array indexes (int). ValueError saying
    where the path goes wrong, for the registry to report at load."""
    if not text.startswith("$"):
        raise ValueError("a JSON path starts with `$` (the whole document), e.g. `$.status`")
    steps: list[Step] = []
    i = 1
    while i < len(text):
        if text[i] == "." and (m := _NAME.match(text, i + 1)):
            steps.append(m.group())
            i = m.end()
        elif text[i] == "[" and (m := _INDEX.match(text, i + 1)) and text[m.end() : m.end() + 1] == "]":
            steps.append(int(m.group()))
            i = m.end() + 1
        elif text[i] == "[" and text[i + 1 : i + 2] in ("'", '"'):
            name, i = _quoted(text, i + 1)
            steps.append(name)
        else:
            raise ValueError(
                f"unexpected {text[i : i + 10]!r} at character {i + 1}: the subset knows `.name`, "
                '`["name"]` and `[index]`'
            )
    return tuple(steps)


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted name starting at text[i] (the quote), and the index after its closing `]`."""
    quote, out, i = text[i], [], i + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            if text[i + 1 : i + 2] != "]":
                break
            return "".join(out), i + 2
        else:
            out.append(ch)
            i += 1
    raise ValueError(f'unterminated quoted name at character {i + 1}: write it `["name"]`')


def format_path(steps: tuple[Step, ...]) -> str:
    """The canonical text of a parsed path (names quoted only where they must be)."""
    parts = ["$"]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _NAME.fullmatch(step):
            parts.append(f".{step}")
        else:
            parts.append("[" + json.dumps(step) + "]")
    return "".join(parts)
