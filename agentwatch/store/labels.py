"""Small per-agent memories of the monitor, kept as opaque text: what it last saw of
label-registered agents (agentwatch.docker.labels.label_memory), replaced whole at each run whose
engine answered; and what each agent last said it is (agentwatch.drift), updated per agent."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .base import StoreBase
from .schema import agent_identity, label_agents

__all__ = ["LabelAgentsTable"]


class LabelAgentsTable(StoreBase):
    async def remember_label_agents(self, memory: Mapping[str, str]) -> None:
        """Make the table exactly `memory`, in one transaction; unchanged rows are left alone."""
        now = datetime.now(UTC)

        def write(conn: Connection) -> None:
            have = {r.agent_id: r.memory for r in conn.execute(sa.select(label_agents))}
            gone = [agent_id for agent_id in have if agent_id not in memory]
            for start in range(0, len(gone), 500):
                conn.execute(label_agents.delete().where(label_agents.c.agent_id.in_(gone[start : start + 500])))
            for agent_id, text in memory.items():
                if agent_id not in have:
                    conn.execute(label_agents.insert().values(agent_id=agent_id, memory=text, updated_at=now))
                elif have[agent_id] != text:
                    conn.execute(
                        label_agents.update()
                        .where(label_agents.c.agent_id == agent_id)
                        .values(memory=text, updated_at=now)
                    )

        await self._run(write, begin=True)

    async def remembered_label_agents(self) -> dict[str, str]:
        return await self._run(lambda conn: {r.agent_id: r.memory for r in conn.execute(sa.select(label_agents))})

    async def load_identities(self, agent_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The identity each of these agents last reported (agents never seen reporting are absent)."""
        wanted = list(agent_ids)

        def read(conn: Connection) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for start in range(0, len(wanted), 500):
                query = sa.select(agent_identity).where(agent_identity.c.agent_id.in_(wanted[start : start + 500]))
                out.update({r.agent_id: json.loads(r.identity) for r in conn.execute(query)})
            return out

        return await self._run(read) if wanted else {}

    async def save_identities(self, identities: Mapping[str, Mapping[str, Any]]) -> None:
        """Insert or replace these agents' identities, in one transaction."""
        now = datetime.now(UTC)

        def write(conn: Connection) -> None:
            ids = list(identities)
            for start in range(0, len(ids), 500):
                conn.execute(agent_identity.delete().where(agent_identity.c.agent_id.in_(ids[start : start + 500])))
            for agent_id, identity in identities.items():
                conn.execute(
                    agent_identity.insert().values(
                        agent_id=agent_id, identity=json.dumps(dict(identity), sort_keys=True), updated_at=now
                    )
                )

        if identities:
            await self._run(write, begin=True)
