"""The Prefect-native heartbeat option: agents that have the Prefect client emit
`agentwatch.agent.heartbeat` events themselves, and a proactive automation notices when one stops.

    from prefect.events import emit_event
    emit_event("agentwatch.agent.heartbeat", resource={"prefect.resource.id": "agentwatch.agent.batch-7"})

No heartbeat server is involved: the Prefect server's trigger engine keeps one timer per agent
(`for_each` the resource id) and fires when no heartbeat arrived for `within` after the last one.
docs/decisions.md: only a proactive trigger with `after` equal to `expect` works per agent on 3.8 OSS, and
it fires about `within` + 3.5 s after the last event. This module only defines the automation;
creating it on a server is bootstrap's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from prefect.events import AutomationCore, EventTrigger, Posture
from prefect.events.actions import ActionTypes, DoNothing

from agentwatch.events import AGENT_HEARTBEAT, EVERY_AGENT, agent_resource_id

__all__ = ["HEARTBEAT_EVENT", "heartbeat_automation"]

HEARTBEAT_EVENT = AGENT_HEARTBEAT


def heartbeat_automation(
    within: timedelta = timedelta(seconds=90),
    actions: Sequence[ActionTypes] = (),
    name: str = "agentwatch: agent heartbeat missing",
    agent_ids: Sequence[str] = (),
) -> AutomationCore:
    """A dead-man automation: fires for an agent whose last heartbeat event is `within` old.

    `actions` default to none but the trigger itself (visible in the UI and as an
    `prefect.automation.triggered` event other automations can route); pass a SendNotification or
    RunDeployment to act. `agent_ids` narrows it to some agents (default: every agent).
    """
    if within < timedelta(seconds=10):
        raise ValueError("a proactive trigger needs `within` of at least 10s")
    ids = [agent_resource_id(a) for a in agent_ids] or [EVERY_AGENT]
    trigger = EventTrigger(
        match={"prefect.resource.id": ids},
        after={HEARTBEAT_EVENT},
        expect={HEARTBEAT_EVENT},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=within,
    )
    return AutomationCore(
        name=name,
        description=f"No {HEARTBEAT_EVENT} event from an agent for {within.total_seconds():g}s after its last one.",
        trigger=trigger,
        actions=list(actions) or [DoNothing()],
    )
