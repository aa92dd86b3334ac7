"""How long reconcile and shutdown take for a fleet of N containers, on a real Docker engine.

    python bench/docker_ops.py [--count 20] [--stop-timeout 2s]

Builds the busybox test image (tests/docker), then times, each as one flow run against a real
Prefect API (PREFECT_API_URL when set, else one `prefect_test_harness()`) with a fresh SQLite state
store:

- reconcile, nothing to do: N healthy label-registered agents;
- reconcile, N crashed agents: record N exits and start N containers (restart budget permitting);
- reconcile, N orphans: stop and remove N running managed containers no agent owns;
- shutdown, N agents that exit on SIGTERM;
- shutdown, N agents whose PID 1 ignores SIGTERM (SIGKILL after --stop-timeout): concurrency
  shows here, serially it would take N x the timeout;
- the same engine work done directly with docker-py, serially, for comparison.

Everything is created with the label agentwatch.bench=<run id>, agentwatch is scoped to it
(AGENTWATCH_DOCKER_SCOPE), and it is all removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("DO_NOT_TRACK", "1")

import docker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = uuid.uuid4().hex[:8]
LABEL = "agentwatch.bench"


def load_images() -> Any:
    spec = importlib.util.spec_from_file_location("agentwatch_test_images", ROOT / "tests" / "docker" / "images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start(
    client: docker.DockerClient, image: str, count: int, prefix: str, command: str, agent: bool = True
) -> list[Any]:
    """`count` managed containers; each registers agent `<prefix>-<i>` by label unless `agent` is False."""
    boxes = []
    for i in range(count):
        labels = {LABEL: RUN, "agentwatch.managed": "true"}
        if agent:
            labels["agentwatch.agent"] = f"{prefix}-{i}"
        name = f"awb-{RUN}-{prefix}-{i}"
        boxes.append(client.containers.run(image, ["sh", "-c", command], name=name, labels=labels, detach=True))
    return boxes


def wait_all(boxes: list[Any], check: Callable[[dict[str, Any]], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for box in boxes:
        while True:
            box.reload()
            if check(box.attrs["State"]):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{box.name}: {box.attrs['State']}")
            time.sleep(0.1)


def remove_all(client: docker.DockerClient, label: str) -> None:
    for box in client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
        with contextlib.suppress(docker.errors.NotFound):
            box.remove(force=True)


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def timed(label: str, fn: Callable[[], Any], figures: list[tuple[str, float, str]], note: str = "") -> Any:
    began = time.perf_counter()
    result = fn()
    figures.append((label, time.perf_counter() - began, note))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--stop-timeout", default="2s")
    args = parser.parse_args()
    n = args.count
    client = docker.from_env(version="auto", timeout=120)
    image = load_images().build_test_image(client, f"agentwatch-bench:{RUN}", {LABEL: RUN})
    workdir = Path(tempfile.mkdtemp(prefix="agentwatch-bench-"))
    registry = workdir / "fleet.yaml"
    registry.write_text("agents: []\n")
    os.environ.update(
        AGENTWATCH_DATABASE_URL=f"sqlite:///{workdir}/state.db",
        AGENTWATCH_DOCKER_SCOPE=f"{LABEL}={RUN}",
        AGENTWATCH_RESTART_BACKOFF="0s",
    )
    from flows.reconcile import reconcile_fleet
    from flows.shutdown import shutdown_fleet

    def reconcile(**kw: Any) -> Any:
        return asyncio.run(reconcile_fleet(str(registry), **kw))

    def shutdown(**kw: Any) -> Any:
        return asyncio.run(shutdown_fleet(str(registry), stop_timeout=args.stop_timeout, **kw))

    figures: list[tuple[str, float, str]] = []
    try:
        with prefect_api():
            reconcile(dry_run=True)  # warm-up: imports, first API calls
            healthy = start(client, image, n, "ok", "exec /bin/agent")
            wait_all(healthy, lambda s: s["Status"] == "running")
            rows = timed(f"reconcile, {n} healthy agents, nothing to do", reconcile, figures)
            assert not [r for r in rows if r["action"] != "leave"], rows
            rows = timed(f"shutdown, {n} agents that exit on SIGTERM", shutdown, figures)
            assert sum(r["outcome"] == "stopped" for r in rows) == n, rows

            crashed = start(client, image, n, "crash", "exit 3")
            wait_all(crashed, lambda s: s["Status"] == "exited")
            rows = timed(f"reconcile, {n} crashed agents: record + start", reconcile, figures)
            assert sum(r["action"] == "start" and r["outcome"] == "done" for r in rows) == n, rows

            orphans = start(client, image, n, "orphan", "exec /bin/agent", agent=False)
            wait_all(orphans, lambda s: s["Status"] == "running")
            rows = timed(
                f"reconcile, {n} running orphans: stop + remove",
                lambda: reconcile(orphan_min_age="0s", restart_unhealthy=False),
                figures,
            )
            assert sum(r["action"] == "remove" and r["outcome"] == "done" for r in rows) == n, rows

            stubborn = start(client, image, n, "stubborn", "exec sleep 3600")
            wait_all(stubborn, lambda s: s["Status"] == "running")
            rows = timed(
                f"shutdown, {n} agents ignoring SIGTERM (kill after {args.stop_timeout})",
                lambda: shutdown(agent_ids=[f"stubborn-{i}" for i in range(n)]),
                figures,
            )
            assert sum(r["outcome"] == "stopped" for r in rows) == n, rows

            plain = start(client, image, n, "plain", "exec /bin/agent")
            wait_all(plain, lambda s: s["Status"] == "running")
            timed(f"docker-py alone, serial: stop {n} (SIGTERM)", lambda: [b.stop(timeout=10) for b in plain], figures)
            timed(f"docker-py alone, serial: start {n}", lambda: [b.start() for b in plain], figures)
            timed(
                f"docker-py alone, serial: remove {n} (force)", lambda: [b.remove(force=True) for b in plain], figures
            )
    finally:
        remove_all(client, f"{LABEL}={RUN}")
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image, force=True)
    width = max(len(label) for label, _, _ in figures)
    print(f"\n{n} containers, engine {client.version()['Version']}, {os.cpu_count()} cores")
    for label, seconds, note in figures:
        print(f"  {label:<{width}}  {seconds:6.2f} s  {note}")


if __name__ == "__main__":
    main()
