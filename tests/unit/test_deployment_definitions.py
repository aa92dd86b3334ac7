"""Deployments are defined once (deployments/definitions.py): prefect.yaml is generated from the
definitions, serve and bootstrap build from them, and every parameter a run form shows has a
description the Prefect UI renders whole."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.deployments.runner import RunnerDeployment

from deployments.definitions import DEFAULT_INTERVAL, DEFAULT_REGISTRY, DEPLOYMENTS, prefect_yaml, runner_deployments
from flows.reconcile import reconcile_fleet
from flows.shutdown import shutdown_fleet

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served() -> list[RunnerDeployment]:
    """What serve and bootstrap register, built from the project directory as they are."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        return runner_deployments(DEFAULT_REGISTRY, DEFAULT_INTERVAL)


def test_prefect_yaml_is_the_generated_file() -> None:
    committed = (ROOT / "prefect.yaml").read_text()
    assert prefect_yaml() == committed, "prefect.yaml is stale: python -m deployments.definitions > prefect.yaml"


def test_served_deployments_are_the_ones_in_prefect_yaml(served: list[RunnerDeployment]) -> None:
    entries = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert [e["name"] for e in entries] == [d.name for d in served]
    for entry, deployment in zip(entries, served, strict=True):
        assert _served(deployment) == _declared(entry), deployment.name


@pytest.mark.parametrize("definition", DEPLOYMENTS, ids=lambda d: d.name)
def test_every_parameter_has_a_description_the_ui_shows_whole(definition: Any, served: list[RunnerDeployment]) -> None:
    [deployment] = [d for d in served if d.name == definition.name]
    properties = deployment._parameter_openapi_schema.properties
    assert properties, definition.name
    for name, schema in properties.items():
        description = schema.get("description") or ""
        assert description.strip(), f"{definition.full_name}: parameter {name} has no description"
        # The UI renders descriptions as HTML: `<id>` would vanish with the words around it.
        assert "<" not in description and ">" not in description, f"{definition.full_name}: {name}: {description}"
    assert "<" not in (deployment.description or "") and ">" not in (deployment.description or "")


@pytest.mark.parametrize("flow", [reconcile_fleet, shutdown_fleet], ids=lambda f: f.name)
async def test_an_empty_agent_ids_list_is_refused_not_read_as_no_agent(flow: Flow[..., Any]) -> None:
    with pytest.raises(ValueError, match="agent_ids is an empty list: leave it unset"):
        await flow.fn(registry_path="no-such-registry.yaml", agent_ids=[])


def _served(deployment: RunnerDeployment) -> dict[str, Any]:
    schedules = []
    for s in deployment.schedules or []:
        schedule: Any = s.schedule
        if getattr(schedule, "interval", None):
            schedules.append({"interval": schedule.interval})
        else:
            schedules.append({"cron": schedule.cron, "timezone": schedule.timezone})
    options = deployment.concurrency_options
    return {
        "entrypoint": deployment.entrypoint,
        "description": deployment.description,
        "tags": deployment.tags,
        "parameters": deployment.parameters,
        "schedules": schedules,
        "concurrency": (
            deployment.concurrency_limit,
            options.collision_strategy.value if options else None,
            options.grace_period_seconds if options else None,
        ),
    }


def _declared(entry: dict[str, Any]) -> dict[str, Any]:
    schedules = []
    for s in entry.get("schedules", []):
        assert s["active"] is True
        if "interval" in s:
            schedules.append({"interval": timedelta(seconds=s["interval"])})
        else:
            schedules.append({"cron": s["cron"], "timezone": s["timezone"]})
    limit = entry.get("concurrency_limit") or {}
    return {
        "entrypoint": entry["entrypoint"],
        "description": entry["description"],
        "tags": entry["tags"],
        "parameters": entry["parameters"],
        "schedules": schedules,
        "concurrency": (limit.get("limit"), limit.get("collision_strategy"), limit.get("grace_period_seconds")),
    }
