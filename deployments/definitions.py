"""Every agentwatch deployment, defined once: name, flow, description, parameters, schedule,
concurrency, tags.

`python -m deployments.serve` serves them and `agentwatch bootstrap` registers them (both through
`runner_deployments`); `prefect.yaml`, what `prefect deploy --all` reads, is generated from them:

    python -m deployments.definitions > prefect.yaml

tests/unit/test_deployment_definitions.py regenerates it and fails when the committed file differs,
so the two ways of deploying never rewrite each other's deployments with other values.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import prefect
import yaml
from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from flows.monitor import monitor_fleet
from flows.operator import fleet_status, pause_agent, resume_agent
from flows.reconcile import reconcile_fleet
from flows.shard import SHARD_DEPLOYMENT, monitor_shard
from flows.shutdown import shutdown_fleet
from flows.uptime import uptime_report

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_REGISTRY",
    "DEPLOYMENTS",
    "MONITOR",
    "MONITOR_LEASE_SECONDS",
    "RECONCILE",
    "SHARD",
    "UPTIME",
    "WORK_POOL",
    "Daily",
    "Definition",
    "EveryInterval",
    "prefect_yaml",
    "runner_deployments",
]

DEFAULT_REGISTRY = "fleet.yaml"  # prefect.yaml's registry_path: relative to the directory deployed from
DEFAULT_INTERVAL = 30.0  # the monitor's schedule, seconds, unless serve or bootstrap gets --interval
WORK_POOL = "agentwatch-pool"  # prefect.yaml's work pool (bootstrap: --work-pool, or none)
TAG = "agentwatch"  # every run carries it: the zombie guard matches on it (deployments/automations.py)

# The lease a Pending monitor run holds on the slot before its engine starts renewing it: longer
# than the zombie guard's window (75 s), so the guard (Crashed: the slot comes back at once) rather
# than the server's lease reaper frees the slot of a run killed while Pending. A run the reaper freed
# first and the guard crashed later would release the slot a second time, which Prefect 3.8 does
# (it falls back to decrementing the limit), letting two monitor runs overlap.
MONITOR_LEASE_SECONDS = 120


@dataclass(frozen=True)
class EveryInterval:
    """Every `interval` seconds: what serve or bootstrap is given (--interval), DEFAULT_INTERVAL in
    prefect.yaml."""


@dataclass(frozen=True)
class Daily:
    """A cron schedule in a time zone."""

    cron: str
    timezone: str = "UTC"


@dataclass(frozen=True)
class Definition:
    """One deployment. Its parameters are `registry_path` and `parameters`; the flow's other
    parameters keep their defaults (a run from the UI can set them)."""

    name: str
    flow: Flow[..., Any]
    description: str
    tags: tuple[str, ...]
    schedule: EveryInterval | Daily | None = None
    concurrency: ConcurrencyLimitConfig | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""  # the comment above its entry in prefect.yaml

    @property
    def full_name(self) -> str:
        return f"{self.flow.name}/{self.name}"

    @property
    def entrypoint(self) -> str:
        """`flows/monitor.py:monitor_fleet`: relative to the project directory."""
        return f"{self.flow.fn.__module__.replace('.', '/')}.py:{self.flow.fn.__name__}"

    def all_parameters(self, registry: str) -> dict[str, Any]:
        return {"registry_path": registry, **self.parameters}

    def schedules(self, interval: float) -> list[Schedule]:
        if isinstance(self.schedule, EveryInterval):
            return [Interval(interval)]
        if isinstance(self.schedule, Daily):
            return [Cron(self.schedule.cron, timezone=self.schedule.timezone)]
        return []

    def runner(self, registry: str, interval: float = DEFAULT_INTERVAL) -> RunnerDeployment:
        """The deployment for serve and bootstrap. Call it off the event loop: `to_deployment`
        answers a coroutine on one."""
        deployment = self.flow.to_deployment(
            name=self.name,
            schedules=self.schedules(interval) or None,
            parameters=self.all_parameters(registry),
            concurrency_limit=self.concurrency,
            tags=list(self.tags),
            description=self.description,
        )
        assert isinstance(deployment, RunnerDeployment)
        return deployment

    def yaml_entry(self) -> dict[str, Any]:
        """Its entry in prefect.yaml (keys in the order `prefect deploy` documents them)."""
        entry: dict[str, Any] = {
            "name": self.name,
            "entrypoint": self.entrypoint,
            "description": self.description,
            "tags": list(self.tags),
            "parameters": self.all_parameters(DEFAULT_REGISTRY),
        }
        if isinstance(self.schedule, EveryInterval):
            entry["schedules"] = [{"interval": int(DEFAULT_INTERVAL), "active": True}]
        elif isinstance(self.schedule, Daily):
            entry["schedules"] = [{"cron": self.schedule.cron, "timezone": self.schedule.timezone, "active": True}]
        if self.concurrency is not None:
            limit: dict[str, Any] = {"limit": self.concurrency.limit}
            if self.concurrency.collision_strategy is not None:
                limit["collision_strategy"] = self.concurrency.collision_strategy.value
            if self.concurrency.grace_period_seconds is not None:
                limit["grace_period_seconds"] = self.concurrency.grace_period_seconds
            entry["concurrency_limit"] = limit
        entry["work_pool"] = {"name": WORK_POOL}
        return entry


MONITOR = Definition(
    name="monitor",
    flow=monitor_fleet,
    description="Probe every agent that is due, apply the health policy, record transitions.",
    tags=(TAG,),
    schedule=EveryInterval(),
    concurrency=ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW, grace_period_seconds=MONITOR_LEASE_SECONDS
    ),
    parameters={"force": False, "shards": 1},
    note=f"Every {DEFAULT_INTERVAL:g} s; never two runs at once and no backlog: a run that would overlap is cancelled.\n"
    f"A Pending run's slot lease ({MONITOR_LEASE_SECONDS} s) outlasts the zombie guard's 75 s window (README).\n"
    "shards: N > 1 splits each cycle into N monitor-shard runs on the work pool (README: Shards).",
)
SHARD = Definition(
    name=SHARD_DEPLOYMENT.split("/", 1)[1],
    flow=monitor_shard,
    description="One shard of a sharded monitor cycle: probe and commit the agents whose id hashes to it.",
    tags=(TAG,),
    parameters={"shard": 0, "shards": 1, "force": False},
    note="Started by a monitor run with shards > 1, one run per shard, each on any worker of the pool;\n"
    "registry_path is then block:agentwatch-registry-..., the registry the monitor stored in a block. No schedule.",
)
RECONCILE = Definition(
    name="reconcile",
    flow=reconcile_fleet,
    description="Record Docker agents' exits, remove orphan containers, restart unhealthy agents within budget.",
    tags=(TAG, "docker"),
    concurrency=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
    note="Docker agents: started by hand from the UI (Run > Custom run fills in the parameters) or by the\n"
    "automation `agentwatch: restart failed docker agents` with `agent_ids` from an event. No schedule.\n"
    "One run at a time: runs started by automations queue instead of racing for the same containers.",
)
SHUTDOWN = Definition(
    name="shutdown",
    flow=shutdown_fleet,
    description="Stop every managed agent container gracefully (or leave them running) and record it.",
    tags=(TAG, "docker"),
)
PAUSE = Definition(
    name="pause-agent",
    flow=pause_agent,
    description="Pause an agent (maintenance); a sticky pause also ignores its heartbeats.",
    tags=(TAG, "operator"),
    note="Operator flows, for agents of every kind: run from the UI (Run > Custom run asks for the agent\n"
    "id and, for a pause, `until` and `sticky`). No schedule.",
)
RESUME = Definition(
    name="resume-agent",
    flow=resume_agent,
    description="End an agent's pause; its counters and timers restart.",
    tags=(TAG, "operator"),
)
STATUS = Definition(
    name="fleet-status",
    flow=fleet_status,
    description="Every agent's state, last beat, missed beats and pause, as a table artifact.",
    tags=(TAG, "operator"),
)
UPTIME = Definition(
    name="uptime-report",
    flow=uptime_report,
    description="Every agent's uptime over 24 h, 7 d and 30 d, as the agentwatch-uptime artifact.",
    tags=(TAG,),
    schedule=Daily("5 0 * * *"),  # 00:05 UTC: the report's 24 h are (nearly) the day before
    note="Every agent's availability over 24 h, 7 d and 30 d from the transition log, daily at 00:05 UTC.",
)

DEPLOYMENTS: tuple[Definition, ...] = (MONITOR, SHARD, RECONCILE, SHUTDOWN, PAUSE, RESUME, STATUS, UPTIME)


def runner_deployments(
    registry: str, interval: float = DEFAULT_INTERVAL, definitions: Sequence[Definition] = DEPLOYMENTS
) -> list[RunnerDeployment]:
    """Every deployment for `registry` (serve and bootstrap pass it resolved), the monitor every
    `interval` seconds. Call it off the event loop."""
    return [d.runner(registry, interval) for d in definitions]


_HEADER = """\
# GENERATED by `python -m deployments.definitions > prefect.yaml` from deployments/definitions.py:
# edit that file, not this one (tests/unit/test_deployment_definitions.py compares the two).
#
# agentwatch deployments. From the project directory:
#   prefect work-pool create agentwatch-pool --type process
#   prefect deploy --all
#   PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 prefect worker start --pool agentwatch-pool
# With no `pull` section, `prefect deploy` records this directory as the working directory, so a
# process worker on the same machine runs the flows from here.
"""


def prefect_yaml(definitions: Sequence[Definition] = DEPLOYMENTS) -> str:
    """The text of prefect.yaml for `definitions`."""
    head = {"name": "agentwatch", "prefect-version": prefect.__version__, "build": None, "push": None}
    parts = [_HEADER, _dump(head), "\ndeployments:\n"]
    for i, definition in enumerate(definitions):
        if i:
            parts.append("\n")
        parts.extend(f"  # {line}\n" for line in definition.note.splitlines())
        parts.append(_indent(_dump([definition.yaml_entry()])))
    return "".join(parts)


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def main() -> int:
    sys.stdout.write(prefect_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
