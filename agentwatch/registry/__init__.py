"""The registry: which agents exist, how each is probed and with what policy.

A registry file is YAML, validated at load. A bad file is rejected whole with every problem named
by agent id and field path; nothing is half-loaded. Policy fields may be given per agent or under
`defaults:`; an agent's own value wins.

    base.py         the strict model base and the names (slugs, variables) a file may use
    urls.py         URL, host and header checks; `redact_url`, the primitive under agentwatch.redact
    conditions.py   the JSON path of the http probe's `json` condition
    probes.py       one model per probe kind, and ProbeSpec holding exactly one
    alerts.py       the `alerts:` section: routes, grouping, reminders, silences
    specs.py        Policy, AgentSpec and Registry
    references.py   checks across agents: `depends_on` and `alerts:` name existing agents, no loops
    load.py         load_registry / parse_registry / validate_registry: every problem named

The package imports nothing from agentwatch but errors, durations and settings: everything else
stands on it.
"""

from .alerts import AlertsConfig
from .load import load_registry, parse_registry, read_registry_text, validate_registry
from .probes import (
    A2aProbe,
    AcpProbe,
    CommandProbe,
    DockerProbe,
    EnvFrom,
    HeartbeatProbe,
    HttpProbe,
    JsonCondition,
    McpProbe,
    ProbeKind,
    ProbeSpec,
    TcpProbe,
)
from .specs import POLICY_FIELDS, AgentSpec, Policy, Registry
from .urls import is_placeholder, url_problem

__all__ = [
    "POLICY_FIELDS",
    "A2aProbe",
    "AcpProbe",
    "AgentSpec",
    "AlertsConfig",
    "CommandProbe",
    "DockerProbe",
    "EnvFrom",
    "HeartbeatProbe",
    "HttpProbe",
    "JsonCondition",
    "McpProbe",
    "Policy",
    "ProbeKind",
    "ProbeSpec",
    "Registry",
    "TcpProbe",
    "is_placeholder",
    "load_registry",
    "parse_registry",
    "read_registry_text",
    "url_problem",
    "validate_registry",
]
