"""Measure alert latency: from an agent's transition to the webhook's receipt of its chat message.

    PREFECT_API_URL=http://127.0.0.1:4200/api python bench/alert_latency.py [--runs 5]

Against the Prefect server in PREFECT_API_URL (else a `prefect_test_harness()`, which runs the
same triggers and actions services). It serves one HTTP agent on 127.0.0.1 and a webhook receiver
on 127.0.0.1, creates one route's notification block and automations (the real ones, from
deployments/), then `--runs` times: fails the agent (failure threshold 1, so one monitor cycle
turns it unhealthy), waits for the down message, recovers it and waits for the resolved one.
Per run it prints transition -> receipt (the event's `since`, when the state changed) and alert
event -> receipt (the `agentwatch.alert.down` event's occurred time); then median, min and max.
Only what it created is removed afterwards: it never runs bootstrap, which would prune the
server's own agentwatch automations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("DO_NOT_TRACK", "1")

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROUTE = "bench-latency"


def _receiver_module() -> Any:
    # The tests' webhook receiver, loaded by path (tests/ is not a package).
    spec = importlib.util.spec_from_file_location("alert_support", ROOT / "tests" / "integration" / "alert_support.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["alert_support"] = module
    spec.loader.exec_module(module)
    return module


def write_registry(path: Path, url: str) -> None:
    registry = {
        "agents": [{"id": "bench-1", "failure_threshold": 1, "timeout": "2s", "probe": {"http": {"url": url}}}],
        "alerts": {"routes": [{"name": ROUTE, "kind": "webhook", "url_env": "AW_BENCH_URL", "monitor": False}]},
    }
    path.write_text(yaml.safe_dump(registry))


async def measure(runs: int) -> list[tuple[float, float]]:
    from prefect.client.orchestration import get_client

    from agentwatch.demo import serve_in_thread
    from agentwatch.registry import load_registry
    from deployments.automations import route_automations
    from deployments.notifications import block_name, resolve_url, route_block
    from flows.monitor import monitor_fleet

    support = _receiver_module()
    out: list[tuple[float, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="aw-latency-") as tmp,
        support.receiving() as rx,
        serve_in_thread() as agents,
    ):
        os.environ["AW_BENCH_URL"] = rx.url + "/bench"
        os.environ["AGENTWATCH_DATABASE_URL"] = f"sqlite:///{tmp}/state.db"
        os.environ["AGENTWATCH_DOCKER_LABELS"] = "false"
        path = Path(tmp) / "fleet.yaml"
        write_registry(path, agents.url("ok-bench"))
        [route] = load_registry(path).alerts.routes  # type: ignore[union-attr]
        block_id = await route_block(route, await resolve_url(route)).asave(block_name(route), overwrite=True)
        async with get_client() as client:
            automation_ids = [await client.create_automation(a) for a in route_automations(route, block_id)]
        try:
            await monitor_fleet(str(path), force=True)  # unknown -> healthy
            for run in range(1, runs + 1):
                write_registry(path, agents.url("fail-bench"))
                started = datetime.now(UTC)
                await monitor_fleet(str(path), force=True)
                if not rx.wait(lambda r, n=run: len(r.on("/bench")) >= 2 * n - 1, 30):
                    raise SystemExit(f"run {run}: no down message within 30 s")
                message = rx.on("/bench")[2 * run - 2]
                since = datetime.fromisoformat(message.json["since"]).timestamp()
                occurred = await _alert_occurred(started)
                out.append((message.at - since, message.at - occurred))
                print(f"run {run}: transition -> receipt {out[-1][0]:.3f} s, alert event -> receipt {out[-1][1]:.3f} s")
                write_registry(path, agents.url("ok-bench"))
                await monitor_fleet(str(path), force=True)
                if not rx.wait(lambda r, n=run: len(r.on("/bench")) >= 2 * n, 30):
                    raise SystemExit(f"run {run}: no resolved message within 30 s")
        finally:
            async with get_client() as client:
                for automation_id in automation_ids:
                    await client.delete_automation(automation_id)
                await client.delete_block_document(block_id)
    return out


async def _alert_occurred(since: datetime) -> float:
    """The occurred time of the newest agentwatch.alert.down event of bench-1 (readable after 2-5 s)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    deadline = time.monotonic() + 30
    async with get_client() as client:
        while True:
            page = await client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=1)),
                    event=EventNameFilter(name=["agentwatch.alert.down"]),
                    resource=EventResourceFilter(id=["agentwatch.agent.bench-1"]),
                ),
                limit=50,
            )
            if page.events:
                return max(e.occurred for e in page.events).timestamp()
            if time.monotonic() > deadline:
                raise SystemExit("the alert event never became readable")
            await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="down/recover runs (default 5)")
    args = parser.parse_args()
    harness: Any = contextlib.nullcontext()
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.testing.utilities import prefect_test_harness

        harness = prefect_test_harness(server_startup_timeout=120)
    with harness:
        results = asyncio.run(measure(args.runs))
    for label, values in (
        ("transition -> receipt", [r[0] for r in results]),
        ("alert event -> receipt", [r[1] for r in results]),
    ):
        print(
            f"{label}: median {statistics.median(values):.3f} s, min {min(values):.3f} s, "
            f"max {max(values):.3f} s over {len(values)} runs"
        )


if __name__ == "__main__":
    main()
