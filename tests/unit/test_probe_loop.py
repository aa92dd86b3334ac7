"""The probe loop (agentwatch.probes.loop), the cycle's one probe semaphore, and what crosses loops.

Real parts: the probe loop's thread, real TCP servers on 127.0.0.1, a Docker engine URL that
refuses. The fake probe below is a unit test's stand-in for one function (PROBES["http"]), to count
how many checks are in flight at once.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

from agentwatch.cycle import FleetRows
from agentwatch.docker import DockerEngine
from agentwatch.errors import EngineUnavailable
from agentwatch.models import ProbeResult
from agentwatch.probes import dispatch, probe_many
from agentwatch.probes.loop import in_probe_loop, loop_kind, probe_loop
from agentwatch.registry import parse_registry


def _fleet(n: int) -> list[Any]:
    agents = "\n".join(f"  - {{id: a{i}, probe: {{http: {{url: 'http://127.0.0.1:9/{i}'}}}}}}" for i in range(n))
    return list(parse_registry(f"agents:\n{agents}\n").agents)


def test_probe_loop_is_uvloop_in_a_thread_of_its_own() -> None:
    import uvloop

    loop = probe_loop()
    assert loop_kind() == "uvloop"
    assert isinstance(loop, uvloop.Loop)
    assert probe_loop() is loop  # one per process, reused

    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    async def main() -> tuple[int, asyncio.AbstractEventLoop]:
        return await in_probe_loop(where())

    ident, ran_on = asyncio.run(main())
    assert ran_on is loop
    assert ident != threading.get_ident()


def test_in_probe_loop_returns_and_raises_what_the_coroutine_does() -> None:
    async def fails() -> None:
        raise ValueError("agent a1: boom")

    async def main() -> int:
        with pytest.raises(ValueError, match="agent a1: boom"):
            await in_probe_loop(fails())
        return await in_probe_loop(asyncio.sleep(0, result=7))

    assert asyncio.run(main()) == 7


def test_cancelling_the_caller_cancels_the_probes() -> None:
    """A flow timeout cancels the task awaiting the probes: the probes themselves must stop too,
    or they would go on holding sockets on the probe loop."""
    stopped = threading.Event()
    started = threading.Event()

    async def hangs_and_cleans_up() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.2)  # closing sockets, killing a command: takes a moment
            stopped.set()

    async def main() -> None:
        task = asyncio.ensure_future(in_probe_loop(hangs_and_cleans_up()))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The caller goes on (to close the Docker engine, the store) only once the probes ended.
        assert stopped.is_set(), "the caller went on while the probes were still cancelling"

    asyncio.run(main())


def test_a_probe_loop_whose_thread_ended_is_started_again() -> None:
    """A loop nobody runs would hang every later caller: a new one takes its place."""
    old = probe_loop()
    old.call_soon_threadsafe(old.stop)
    for _ in range(100):
        if old.is_closed():
            break
        threading.Event().wait(0.01)
    assert old.is_closed()

    async def main() -> int:
        return await asyncio.wait_for(in_probe_loop(asyncio.sleep(0, result=3)), 5)

    assert asyncio.run(main()) == 3
    assert probe_loop() is not old


def _count_in_flight(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Swap the http probe for one that counts the checks in flight; returns the peak so far."""
    in_flight = peak = 0

    async def counting(agent: Any, ctx: Any) -> ProbeResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return ProbeResult(agent.id, ok=True)

    monkeypatch.setitem(dispatch.PROBES, "http", counting)
    return lambda: peak


def test_one_semaphore_bounds_every_batch_of_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches given the cycle's semaphore never have more checks in flight, together, than it
    allows; and a batch does not keep slots idle while another has work (all 4 slots get used)."""
    peak = _count_in_flight(monkeypatch)
    agents = _fleet(40)

    async def cycle() -> list[list[ProbeResult]]:
        slots = asyncio.Semaphore(4)
        batches = [agents[i : i + 10] for i in range(0, 40, 10)]
        return await asyncio.gather(*(in_probe_loop(probe_many(b, concurrency=10, slots=slots)) for b in batches))

    results = asyncio.run(cycle())
    assert [r.agent_id for batch in results for r in batch] == [a.id for a in agents]
    assert peak() == 4


def test_without_the_cycle_semaphore_a_batch_has_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    peak = _count_in_flight(monkeypatch)
    asyncio.run(probe_many(_fleet(20), concurrency=3))
    assert peak() == 3


def test_real_probes_on_the_probe_loop() -> None:
    """A real TCP check through the probe loop: a listening port is ok, a closed one is not."""

    async def main() -> list[ProbeResult]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        closed = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        dead = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        fleet = parse_registry(
            "agents:\n"
            f"  - {{id: up, probe: {{tcp: {{host: 127.0.0.1, port: {port}}}}}}}\n"
            f"  - {{id: down, probe: {{tcp: {{host: 127.0.0.1, port: {dead}}}}}}}\n"
        )
        async with server:
            return await in_probe_loop(probe_many(fleet.agents, concurrency=2))

    up, down = asyncio.run(main())
    assert (up.agent_id, up.ok) == ("up", True)
    assert (down.agent_id, down.ok) == ("down", False)


def test_docker_engine_works_from_two_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine connection is shared by the flow's loop and the probe loop: its connection lock
    must not belong to either. An engine that refuses is found out once and said the same way."""
    import docker

    tries = []
    real = docker.from_env

    def counted(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(docker, "from_env", counted)
    engine = DockerEngine("tcp://127.0.0.1:9", timeout=2)

    async def inspect_many() -> list[BaseException]:
        results = await asyncio.gather(*(engine.inspect(f"c{i}") for i in range(20)), return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    async def main() -> tuple[list[BaseException], list[BaseException]]:
        here = await inspect_many()
        there = await in_probe_loop(inspect_many())
        return here, there

    here, there = asyncio.run(main())
    assert len(here) == len(there) == 20
    assert all(isinstance(e, EngineUnavailable) and "127.0.0.1:9" in str(e) for e in here + there)
    assert len({str(e) for e in here + there}) == 1
    assert len(tries) == 1  # one failed connection, not one per call or loop
    # Each call raised an exception of its own: a shared one would gather every raise's traceback.
    assert len({id(e) for e in here + there}) == 40


def test_fleet_rows_are_a_list_in_all_but_type() -> None:
    from prefect.futures import resolve_futures_to_states

    plain = [{"id": f"a{i}", "state": "healthy"} for i in range(3)]
    rows = FleetRows(plain)
    assert rows == plain and plain == rows
    assert rows[1]["id"] == "a1" and len(rows) == 3 and [r["id"] for r in rows] == ["a0", "a1", "a2"]
    assert pickle.loads(pickle.dumps(rows)) == plain
    # What it is for: Prefect hands a flow's return value back without walking it.
    assert resolve_futures_to_states(rows) is rows


def test_command_probes_on_the_probe_loop() -> None:
    """A command probe starts a process from the probe loop's thread (not the main thread): its
    exit status is seen, and a hung command is killed at its timeout."""
    fleet = parse_registry(
        "agents:\n"
        "  - {id: ok, probe: {command: {run: 'exit 0'}}}\n"
        "  - {id: bad, probe: {command: {run: 'exit 3'}}}\n"
        "  - {id: hung, timeout: 1s, probe: {command: {run: 'sleep 30'}}}\n"
    )

    async def main() -> list[ProbeResult]:
        return await in_probe_loop(probe_many(fleet.agents, concurrency=3))

    ok, bad, hung = asyncio.run(main())
    assert (ok.agent_id, ok.ok) == ("ok", True)
    assert (bad.agent_id, bad.ok) == ("bad", False) and "3" in bad.reason
    assert (hung.agent_id, hung.ok) == ("hung", False) and "timed out" in hung.reason
