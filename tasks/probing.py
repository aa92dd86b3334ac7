"""Prefect tasks that probe agents: one task run per batch of agents, not one per agent.

Measured on Prefect 3.8 (docs/decisions.md): 1,000 task runs cost the server 24-28 s; 50 tasks of
100 agents took 1.3 s."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NONE

from agentwatch.docker import DockerEngine
from agentwatch.models import ProbeResult
from agentwatch.probes import BeatSnapshot, probe_many
from agentwatch.probes.loop import in_probe_loop
from agentwatch.registry import AgentSpec


@task(name="probe-batch", cache_policy=NONE, retries=0, task_run_name="probe-batch-{label}")
async def probe_batch(
    agents: list[AgentSpec],
    concurrency: int,
    max_body_bytes: int,
    label: str = "",
    beats: BeatSnapshot | None = None,
    docker: DockerEngine | None = None,
    slots: asyncio.Semaphore | None = None,
) -> list[ProbeResult]:
    """Probe a batch of agents concurrently; a failed target is a result, never an exception.
    `beats` are what heartbeat agents are judged by (read once per cycle by the monitor); `docker`
    is the cycle's one engine connection; `slots` the cycle's one probe semaphore, shared by its
    batches (else the batch has `concurrency` slots of its own).

    The checks run on the process's probe loop (agentwatch.probes.loop: uvloop, in a thread of its
    own), not on the loop Prefect runs the flow in."""
    return await in_probe_loop(
        probe_many(
            agents, concurrency=concurrency, max_body_bytes=max_body_bytes, beats=beats, docker=docker, slots=slots
        )
    )
