"""What the monitor last saw of label-registered agents (agentwatch.docker.labels.label_memory):
the store keeps the text as given, one row per agent, replaced whole at each run whose engine
answered."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .base import StoreBase, chunks, lock_table
from .schema import label_agents

__all__ = ["LabelAgentsTable"]


class LabelAgentsTable(StoreBase):
    async def remember_label_agents(self, memory: Mapping[str, str]) -> None:
        """Make the table exactly `memory`, in one transaction; unchanged rows are left alone."""
        now = datetime.now(UTC)

        def write(conn: Connection) -> None:
            # One writer at a time reads and replaces the table (two runs at once: the last stands).
            lock_table(conn, label_agents)
            have = {r.agent_id: r.memory for r in conn.execute(sa.select(label_agents))}
            gone = [agent_id for agent_id in have if agent_id not in memory]
            for chunk in chunks(gone):
                conn.execute(label_agents.delete().where(label_agents.c.agent_id.in_(chunk)))
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
