"""What each agent last said it is (name, version, protocol version: agentwatch.drift), written by
the monitor once a change of it has been reported, so a report the API refused is made again."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from .base import StoreBase, rows_for, upsert
from .schema import agent_identity

__all__ = ["IdentityTable"]


class IdentityTable(StoreBase):
    async def load_identities(self, agent_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The identity each of these agents last reported (agents never seen reporting are absent)."""
        wanted = list(agent_ids)
        if not wanted:
            return {}
        return await self._run(
            lambda conn: {r.agent_id: json.loads(r.identity) for r in rows_for(conn, agent_identity, wanted)}
        )

    async def save_identities(self, identities: Mapping[str, Mapping[str, Any]]) -> None:
        """Insert or replace these agents' identities, in one transaction."""
        now = datetime.now(UTC)
        rows = [
            {
                "agent_id": agent_id,
                "identity": json.dumps(dict(identities[agent_id]), sort_keys=True),
                "updated_at": now,
            }
            for agent_id in sorted(identities)
        ]

        def write(conn: Connection) -> None:
            # An upsert: two runs saving the same agent at once both succeed (the last one's stands).
            conn.execute(upsert(conn, agent_identity, ["identity", "updated_at"]), rows)

        if rows:
            await self._run(write, begin=True)
