"""Measure the uptime read: the whole fleet's transitions over 30 days in one round trip, and the
pure uptime computation over them.

    .venv/bin/python bench/uptime_query.py [--agents 10000] [--per-agent 5,50] [--repeat 5]

For each transitions-per-agent figure it builds a fresh SQLite state store in a temporary
directory: `--agents` agent records and, per agent, that many transitions spread over the last
`--days` days (40: some fall before the 30-day window, so the read must find each agent's last one
before it), written in bulk. Then, `--repeat` times, it times:

- `state_marks(now - 30d)`: the read `agentwatch uptime`, `status` and the `uptime-report` flow make;
- `uptime()` for every agent over 24 h, 7 d and 30 d from those marks;
- the fleet table's column (24 h only: the read and the computation), which the monitor pays per cycle;
- `recent_changes` for 100 agents over 10 minutes (the flapping read of the alert step);
- the 30-day read again with the two history indexes dropped (`--no-compare` skips it).

It prints the median and the range of each. Nothing is asserted: the machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentwatch.models import AgentState  # noqa: E402
from agentwatch.store import StateStore  # noqa: E402
from agentwatch.store.schema import agent_state, transitions  # noqa: E402
from agentwatch.uptime import LONGEST, WINDOWS, fleet_uptime, uptime  # noqa: E402

CYCLE = [AgentState.HEALTHY, AgentState.DEGRADED, AgentState.UNHEALTHY, AgentState.HEALTHY, AgentState.PAUSED]


async def fill(store: StateStore, agents: int, per_agent: int, now: datetime, days: int = 40) -> None:
    rng = random.Random(7)
    span = timedelta(days=days).total_seconds()

    def write(conn: Any) -> None:
        conn.execute(
            agent_state.insert(),
            [
                {
                    "agent_id": f"agent-{i}",
                    "state": "healthy",
                    "reason": "",
                    "failures": 0,
                    "successes": 0,
                    "paused": False,
                    "sticky": False,
                    "version": per_agent,
                    "updated_at": now,
                }
                for i in range(agents)
            ],
        )
        rows = []
        for i in range(agents):
            times = sorted(now - timedelta(seconds=rng.uniform(0, span)) for _ in range(per_agent))
            previous = AgentState.UNKNOWN
            for seq, at in enumerate(times, 1):
                state = CYCLE[(i + seq) % len(CYCLE)]
                rows.append(
                    {
                        "agent_id": f"agent-{i}",
                        "seq": seq,
                        "from_state": previous.value,
                        "to_state": state.value,
                        "reason": "",
                        "failures": 0,
                        "at": at,
                        "published_at": at,
                        "alerted_at": at,
                        "attempts": 1,
                    }
                )
                previous = state
            if len(rows) >= 50_000:
                conn.execute(transitions.insert(), rows)
                rows = []
        if rows:
            conn.execute(transitions.insert(), rows)

    await store._run(write, begin=True)


async def timed(repeat: int, fn: Callable[[], Awaitable[Any]]) -> tuple[list[float], Any]:
    out: Any = None
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        out = await fn()
        times.append(time.perf_counter() - started)
    return times, out


def show(label: str, times: list[float]) -> None:
    print(
        f"  {label:<46} median {statistics.median(times) * 1000:8.1f} ms  (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})"
    )


async def point(agents: int, per_agent: int, repeat: int, compare: bool, days: int) -> None:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        async with StateStore(f"sqlite:///{tmp}/state.db") as store:
            started = time.perf_counter()
            await fill(store, agents, per_agent, now, days)
            print(
                f"{agents:,} agents x {per_agent} transitions over {days} days = {agents * per_agent:,} rows "
                f"(written in {time.perf_counter() - started:.1f} s)"
            )
            since = now - LONGEST
            read_times, marks = await timed(repeat, lambda: store.state_marks(since))
            rows = sum(len(m) for m in marks.values())
            show(f"state_marks(30 d), all agents: {rows:,} marks", read_times)
            records = await store.load()
            compute_times, _ = await timed(repeat, lambda: _compute(marks, records, now))
            show("uptime() 24h/7d/30d for every agent", compute_times)
            day = WINDOWS[:1]

            async def fleet_column() -> int:  # what the monitor's fleet table column costs per cycle
                day_marks = await store.state_marks(now - day[0][1])
                return len(fleet_uptime(day_marks, records, now, day))

            column_times, _ = await timed(repeat, fleet_column)
            show("fleet table column: state_marks(24 h) + uptime", column_times)
            ids = [f"agent-{i}" for i in range(0, agents, max(1, agents // 100))][:100]
            flap_times, _ = await timed(repeat, lambda: store.recent_changes(ids, now - timedelta(minutes=10)))
            show("recent_changes(10 m) for 100 agents", flap_times)
            if compare:
                await store._run(drop_history_indexes, begin=True)
                plain_times, _ = await timed(repeat, lambda: store.state_marks(since))
                show("state_marks(30 d) without the history indexes", plain_times)


def drop_history_indexes(conn: sa.Connection) -> None:
    for name in ("ix_transitions_at", "ix_transitions_agent_id_at"):
        conn.execute(sa.text(f"DROP INDEX {name}"))


async def _compute(marks: dict[str, Any], records: dict[str, Any], now: datetime) -> int:
    for agent_id, agent_marks in marks.items():
        record = records.get(agent_id)
        uptime(agent_marks, now, record.state if record else None)
    return len(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--per-agent", default="5,50", help="transitions per agent, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--days", type=int, default=40, help="the transitions spread over this many days back")
    parser.add_argument("--no-compare", action="store_true", help="skip the read without the index")
    args = parser.parse_args()
    for per_agent in (int(x) for x in args.per_agent.split(",")):
        asyncio.run(point(args.agents, per_agent, args.repeat, not args.no_compare, args.days))


if __name__ == "__main__":
    main()
