"""Security test fixtures: the same Docker fixtures as tests/integration (a real engine, this
session's scope label, containers and images removed by what the session created)."""

from __future__ import annotations

from ..integration.conftest import *  # noqa: F403 (the fixtures)
