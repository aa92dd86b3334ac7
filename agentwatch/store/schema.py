"""The state store's tables. One table per concern, each written by one part of agentwatch:
agent_state and transitions by whoever changes an agent's state (monitor, reconcile, operator
flows), heartbeats by the heartbeat server, restart_budget by reconcile, alert_incidents by the
monitor's alert step."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "OUTBOX_COLUMNS",
    "TZ",
    "agent_state",
    "alert_incidents",
    "heartbeats",
    "metadata",
    "restart_budget",
    "transitions",
]

metadata = sa.MetaData()
TZ = sa.DateTime(timezone=True)

agent_state = sa.Table(
    "agent_state",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("since", TZ),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("successes", sa.Integer, nullable=False, default=0),
    sa.Column("first_seen", TZ),
    sa.Column("last_checked", TZ),
    sa.Column("next_check", TZ),
    sa.Column("latency_ms", sa.Float),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("paused_until", TZ),
    sa.Column("sticky", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

transitions = sa.Table(
    "transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(63), nullable=False, index=True),
    # The record version the transition produced. Not unique: an agent that leaves the registry
    # and comes back starts counting again, and its old history stays. Compare-and-swap on
    # agent_state, in the same database transaction, is what keeps a transition from being
    # recorded twice.
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("at", TZ, nullable=False),
    sa.Column("run_id", sa.String(64)),
    # The outbox: a row is born undelivered, in the transaction that changed the state. Its event
    # id derives from `uid`, so posting it twice is one event on the Prefect server.
    sa.Column("uid", sa.String(36)),
    sa.Column("published_at", TZ, index=True),  # event + artifact version written (or folded)
    sa.Column("alerted_at", TZ, index=True),  # the alert step has decided on it
    sa.Column("claimed_by", sa.String(64)),  # the publisher that holds it until `claimed_until`
    sa.Column("claimed_until", TZ),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # claims so far; > 1: maybe half-done
    # Uptime and flapping read windows of the log (agentwatch/store/history.py): (at) for the
    # fleet's rows of a window, (agent_id, at) for one agent's, or its last row before one.
    sa.Index("ix_transitions_at", "at"),
    sa.Index("ix_transitions_agent_id_at", "agent_id", "at"),
)

# Columns added to `transitions` after its first release, with what an existing row gets: rows
# written before the outbox existed were published then, so they are marked delivered.
OUTBOX_COLUMNS: dict[str, str] = {
    "uid": "VARCHAR(36)",
    "published_at": "TIMESTAMP WITH TIME ZONE",
    "alerted_at": "TIMESTAMP WITH TIME ZONE",
    "claimed_by": "VARCHAR(64)",
    "claimed_until": "TIMESTAMP WITH TIME ZONE",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
}

# Written only by the heartbeat server, so the monitor's compare-and-swap writes to `agent_state`
# never race with a beat (see agentwatch.heartbeat.beats for the merge rules).
heartbeats = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("last_beat_at", TZ),
    sa.Column("last_start_at", TZ),
    sa.Column("last_fail_at", TZ),
    sa.Column("last_exit_code", sa.Integer),
    sa.Column("beats", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated_at", TZ, nullable=False),
)

# Written only by reconcile: one row per agent whose container it restarted (or refused to).
# Compare-and-swap on `version` makes two overlapping reconcile runs restart a container once.
restart_budget = sa.Table(
    "restart_budget",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("restarts", sa.Text, nullable=False, default="[]"),  # JSON list of ISO times
    sa.Column("exhausted_at", TZ),
    sa.Column("retry_at", TZ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

# Written only by the monitor's alert step: one row per agent with an open incident (down, not yet
# healthy again). Compare-and-swap on `version` makes two overlapping runs alert once.
alert_incidents = sa.Table(
    "alert_incidents",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("opened_at", TZ, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("notified_at", TZ),
    sa.Column("reminders", sa.Integer, nullable=False, default=0),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

# Written only by the monitor, when the Docker engine answered: what it last saw of each agent that
# container labels registered (opaque JSON from agentwatch.docker.labels.label_memory), so that
# with the engine unreachable those agents show `unknown` instead of vanishing.
label_agents = sa.Table(
    "label_agents",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("memory", sa.Text, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

# Written only by the monitor: what each agent last said it is (name, version, protocol version:
# agentwatch.drift), saved once a change of it has been reported, so a report the API refused is
# made again by the next run.
agent_identity = sa.Table(
    "agent_identity",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("identity", sa.Text, nullable=False),  # JSON
    sa.Column("updated_at", TZ, nullable=False),
)

# Written only by the monitor's alert step: one row per agent in a flapping episode
# (agentwatch.flapping), compare-and-swap on `version` like `alert_incidents`. A table of its own
# rather than columns on the incident row: a flapping agent need not be down (an incident exists
# only while it is), and the incident row is deleted when the agent turns healthy mid-episode.
flap_state = sa.Table(
    "flap_state",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("since", TZ, nullable=False),
    sa.Column("changes", sa.Integer, nullable=False),
    sa.Column("notified_at", TZ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)
