"""Drift: the identity the protocol probes record, and what changed between two of them."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.drift import IdentityChange, describe_changes, identity_changes, make_identity

A = {"name": "gemini-cli", "version": "0.9.1", "protocol": "1"}


def test_make_identity_normalises_what_agents_report() -> None:
    assert make_identity("gemini-cli", "0.9.1", 1) == A
    assert make_identity(None, "", {"nested": 1}) == {"name": None, "version": None, "protocol": None}
    assert make_identity("  two\nlines ", "v" * 500, "2025-11-25") == {
        "name": "two lines",
        "version": "v" * 200,
        "protocol": "2025-11-25",
    }


@pytest.mark.parametrize(
    ("before", "after", "changes"),
    [
        (None, A, []),
        (A, None, []),
        (A, {}, []),
        (A, dict(A), []),
        (A, {**A, "version": "0.10.0"}, [IdentityChange("version", "0.9.1", "0.10.0")]),
        (
            A,
            {"name": "claude-code", "version": "0.9.1", "protocol": "2"},
            [IdentityChange("name", "gemini-cli", "claude-code"), IdentityChange("protocol", "1", "2")],
        ),
        (A, {**A, "version": None}, [IdentityChange("version", "0.9.1", None)]),
        ({**A, "version": None}, A, [IdentityChange("version", None, "0.9.1")]),
        ({"name": "x", "protocol": 1}, {"name": "x", "protocol": "1"}, []),
    ],
    ids=["first-sight", "no-identity-now", "empty-now", "same", "upgrade", "two-fields", "stopped-saying",
         "started-saying", "int-vs-text"],
)  # fmt: skip
def test_identity_changes(
    before: dict[str, Any] | None, after: dict[str, Any] | None, changes: list[IdentityChange]
) -> None:
    assert identity_changes(before, after) == changes


def test_change_payload_and_description() -> None:
    changes = identity_changes(A, {**A, "version": "0.10.0", "protocol": "2"})
    assert [c.payload() for c in changes] == [
        {"field": "version", "from": "0.9.1", "to": "0.10.0"},
        {"field": "protocol", "from": "1", "to": "2"},
    ]
    assert describe_changes(changes) == "version 0.9.1 -> 0.10.0; protocol 1 -> 2"
    assert str(IdentityChange("version", None, "1.0")) == "version (none) -> 1.0"
