"""The README's Docker settings against a real engine:

- "The engine is `AGENTWATCH_DOCKER_HOST`, else `DOCKER_HOST`, else the local socket."
- "`AGENTWATCH_DOCKER_SCOPE=key=value` narrows everything it lists to containers that also carry
  that label" (a key alone: any value).
- "Label registration (opt-in: `AGENTWATCH_DOCKER_LABELS=true`)": with it false (or unset) no
  label registers an agent, though a label claiming a registry agent is still reported.
- "engine unreachable: `unknown` ... and the log says so once per run".

Every container here is this session's own (`run_container`: the session's label, removed after).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agentwatch.docker import AGENT_LABEL, MANAGED_LABEL, DockerEngine
from agentwatch.errors import EngineUnavailable
from agentwatch.registry import parse_registry
from agentwatch.settings import get_settings

from .docker_support import SESSION, TEST_LABEL, RunContainer, write_registry

if TYPE_CHECKING:
    from ..conftest import EveryLog

pytestmark = [pytest.mark.integration, pytest.mark.docker]

NO_ENGINE = "unix:///tmp/agentwatch-no-engine.sock"
ELSEWHERE = "unix:///tmp/agentwatch-elsewhere.sock"
# A label of this session's own, so other processes' containers never fall into these scopes.
FLEET = f"{TEST_LABEL}.fleet-{SESSION}"


def real_engine() -> str:
    """The URL of the engine the test fixtures reach (DOCKER_HOST, else the local socket)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


async def listed_ids(labels: dict[str, str | None] | None = None) -> set[str]:
    async with DockerEngine.from_settings(get_settings()) as engine:
        return {info.id for info in await engine.list_containers(labels or {MANAGED_LABEL: None})}


async def test_agentwatch_docker_host_wins_over_docker_host(
    run_container: RunContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = run_container("host-choice", "exec /bin/agent")
    real = real_engine()

    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.setenv("AGENTWATCH_DOCKER_HOST", real)
    assert box.id in await listed_ids()  # the setting's engine, not DOCKER_HOST's

    monkeypatch.setenv("DOCKER_HOST", real)
    monkeypatch.setenv("AGENTWATCH_DOCKER_HOST", ELSEWHERE)
    with pytest.raises(EngineUnavailable, match="agentwatch-elsewhere.sock"):
        await listed_ids()

    monkeypatch.delenv("AGENTWATCH_DOCKER_HOST")
    assert box.id in await listed_ids()  # else DOCKER_HOST
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    with pytest.raises(EngineUnavailable, match="agentwatch-no-engine.sock"):
        await listed_ids()


async def test_the_local_socket_without_either(run_container: RunContainer, monkeypatch: pytest.MonkeyPatch) -> None:
    if real_engine() != "unix:///var/run/docker.sock":
        pytest.skip(f"the test engine is not on the local socket ({real_engine()})")
    box = run_container("local-socket", "exec /bin/agent")
    monkeypatch.delenv("AGENTWATCH_DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert box.id in await listed_ids()


async def test_the_scope_narrows_every_listing(run_container: RunContainer, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = run_container("scope-mine", "exec /bin/agent", agent="scope-mine", labels={FLEET: "a"})
    theirs = run_container("scope-theirs", "exec /bin/agent", agent="scope-theirs", labels={FLEET: "b"})
    unscoped = run_container("scope-none", "exec /bin/agent", agent="scope-none")
    ours = {mine.id, theirs.id, unscoped.id}

    monkeypatch.setenv("AGENTWATCH_DOCKER_SCOPE", f"{FLEET}=a")
    assert await listed_ids() == {mine.id}
    assert await listed_ids({AGENT_LABEL: None}) == {mine.id}
    assert await listed_ids({AGENT_LABEL: "scope-theirs"}) == set()

    monkeypatch.setenv("AGENTWATCH_DOCKER_SCOPE", FLEET)  # a key alone: any value
    assert await listed_ids() == {mine.id, theirs.id}

    monkeypatch.setenv("AGENTWATCH_DOCKER_SCOPE", f"{TEST_LABEL}={SESSION}")
    assert ours <= await listed_ids()

    monkeypatch.delenv("AGENTWATCH_DOCKER_SCOPE")  # no scope: every managed container on the engine
    assert ours <= await listed_ids()


@pytest.mark.parametrize("value", ["true", "false", None])
async def test_labels_register_agents_only_when_turned_on(
    run_container: RunContainer, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    from tasks.containers import list_fleet_containers

    if value is None:
        monkeypatch.delenv("AGENTWATCH_DOCKER_LABELS", raising=False)
    else:
        monkeypatch.setenv("AGENTWATCH_DOCKER_LABELS", value)
    run_container("by-label", "exec /bin/agent", agent="by-label")
    run_container("claimer", "exec /bin/agent", agent="listed")  # claims the registry's agent
    registry = parse_registry("agents:\n  - {id: listed, probe: {tcp: {host: 127.0.0.1, port: 9}}}\n")
    settings = get_settings()
    async with DockerEngine.from_settings(settings) as engine:
        seen = await list_fleet_containers(engine, registry, settings)
    assert seen.fleet.ids == (["listed", "by-label"] if value == "true" else ["listed"])
    assert [(p.agent, p.field) for p in seen.problems] == [("listed", AGENT_LABEL)]  # reported either way


async def test_an_unreachable_engine_is_logged_once_per_run(
    prefect_server: str,
    state_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    every_log: EveryLog,
) -> None:
    from flows.monitor import monitor_fleet

    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("AGENTWATCH_DOCKER_HOST", raising=False)
    monkeypatch.setenv("AGENTWATCH_DOCKER_LABELS", "true")
    agents = [{"id": f"box-{i}", "probe": {"docker": {"container": f"c{i}"}}} for i in range(5)]
    path = write_registry(tmp_path / "fleet.yaml", agents)
    rows = await monitor_fleet(path, force=True)
    assert {(r["state"], r["reason"]) for r in rows} == {("unknown", "docker engine unreachable")}
    # What the run says (its loggers and agentwatch's), at INFO and above; not SQL echoes of the reason.
    ours = [r for r in every_log if r.name.split(".")[0] in ("prefect", "agentwatch", "flows", "tasks")]
    said = [
        r
        for r in ours
        if r.levelno >= 20 and ("unreachable" in r.getMessage().lower() or "no-engine.sock" in r.getMessage())
    ]
    assert len(said) == 1, "\n".join(f"{r.name} {r.levelname}: {r.getMessage()}" for r in said)
    assert "agentwatch-no-engine.sock" in said[0].getMessage()
