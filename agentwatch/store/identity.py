"""What each agent last said it is (name, version, protocol version: agentwatch.drift), written by
the monitor once a change of it has been reported, so a report the API refused is made again."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from .base import StoreBase, chunks, rows_for
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
            {"agent_id": agent_id, "identity": json.dumps(dict(identity), sort_keys=True), "updated_at": now}
            for agent_id, identity in identities.items()
        ]

        def write(conn: Connection) -> None:
            for chunk in chunks(list(identities)):
                conn.execute(agent_identity.delete().where(agent_identity.c.agent_id.in_(chunk)))
            conn.execute(agent_identity.insert(), rows)

        if rows:
            await self._run(write, begin=True)
