"""Probes: check agents and return a ProbeResult; never raise for a failed target.

One module per probe kind (`http`, `tcp`, `command`, `docker`, `heartbeat`, `acp`, `mcp`, `a2a`);
`context` holds what a probe is given; `dispatch` runs the probe of an agent's kind within its
timeout (`run_probe`), or a whole batch concurrently (`probe_many`), and scrubs every result of
the agent's secrets.

The caller passes what the probes share: the HTTP client (or one is made per batch), the beats the
monitor read (heartbeat agents) and the Docker engine connection (docker agents).
"""

from __future__ import annotations

from .context import BeatSnapshot, ContainerInspector, ProbeContext, ProbeFn
from .dispatch import PROBES, make_http_client, probe_many, run_probe

__all__ = [
    "PROBES",
    "BeatSnapshot",
    "ContainerInspector",
    "ProbeContext",
    "ProbeFn",
    "make_http_client",
    "probe_many",
    "run_probe",
]
