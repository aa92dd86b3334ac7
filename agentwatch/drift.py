"""Drift: what an agent says it is (name, version, protocol version) changed between two checks.

The protocol probes (acp, mcp, a2a) put what the agent reported into `ProbeResult.details` under
`IDENTITY_KEY`, always as made by `make_identity`:

    details["identity"] = {"name": "gemini-cli", "version": "0.9.1", "protocol": "1"}

Each value is a string, or None when the agent did not say. `identity_changes` compares two such
identities (the one last seen and the new one) and lists what changed; a change of identity is not
a change of health state: it is reported (event `agentwatch.agent.changed`, a line in the agent's
artifact) and the state stays as it is.

Pure functions of their arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import ProbeResult

__all__ = [
    "IDENTITY_FIELDS",
    "IDENTITY_KEY",
    "IdentityChange",
    "Drift",
    "describe_changes",
    "identity_changes",
    "make_identity",
    "plan_drift",
]

IDENTITY_KEY = "identity"
IDENTITY_FIELDS = ("name", "version", "protocol")
_MAX_CHARS = 200  # an agent's self-description is shown, stored and compared: keep it short


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """One field of an agent's identity that changed: `before` -> `after` (None: not reported)."""

    field: str
    before: str | None
    after: str | None

    def payload(self) -> dict[str, Any]:
        """The entry of an `agentwatch.agent.changed` event's payload."""
        return {"field": self.field, "from": self.before, "to": self.after}

    def __str__(self) -> str:
        return f"{self.field} {self.before or '(none)'} -> {self.after or '(none)'}"


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = " ".join(str(value).split())
    return text[:_MAX_CHARS] or None


def make_identity(name: Any, version: Any, protocol: Any) -> dict[str, str | None]:
    """The identity record the probes put in details[IDENTITY_KEY]: each field a short one-line
    string, or None when the agent reported nothing usable (a protocol version 1 becomes "1")."""
    return {"name": _text(name), "version": _text(version), "protocol": _text(protocol)}


def identity_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[IdentityChange]:
    """What changed from identity `before` to identity `after`, field by field, in IDENTITY_FIELDS
    order. Nothing when either is None: a first sight is no change, and a check that learned no
    identity (the agent was down) says nothing about it. A field the agent stopped reporting is a
    change to None."""
    if not before or not after:
        return []
    changes = []
    for field in IDENTITY_FIELDS:
        old, new = _text(before.get(field)), _text(after.get(field))
        if old != new:
            changes.append(IdentityChange(field, old, new))
    return changes


def describe_changes(changes: list[IdentityChange]) -> str:
    """One line for an artifact or a log: "version 0.9.1 -> 0.10.0; protocol 1 -> 2"."""
    return "; ".join(str(change) for change in changes)


@dataclass(frozen=True, slots=True)
class Drift:
    """One agent whose identity changed since it was last seen (or was seen for the first time,
    `changes` empty: then it is only remembered, not reported)."""

    agent_id: str
    before: dict[str, Any] | None
    after: dict[str, Any]
    changes: list[IdentityChange]


def plan_drift(results: Iterable[ProbeResult], known: Mapping[str, dict[str, Any]]) -> list[Drift]:
    """The identities this cycle's checks learned that differ from what is `known`: first sights
    (to remember) and changes (to report, then remember)."""
    out: list[Drift] = []
    for result in results:
        after = result.details.get(IDENTITY_KEY) if result.details else None
        if not isinstance(after, dict):
            continue
        before = known.get(result.agent_id)
        if before is None:
            out.append(Drift(result.agent_id, None, after, []))
            continue
        changes = identity_changes(before, after)
        if changes:
            out.append(Drift(result.agent_id, before, after, changes))
    return out
