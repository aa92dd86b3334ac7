"""The `agentwatch` command line (console script `agentwatch = "cli:main"`, or `python -m cli`).

`validate` needs nothing but the registry file; `status` and `uptime` read the state store. The
other commands run Prefect flows: against the server in PREFECT_API_URL when one is configured,
else against an ephemeral local API that Prefect starts for the run. The command table is in
cli/app.py; one module per command group (check, alerts, docker, heartbeat, operator, status,
uptime) holds each command's arguments and what it runs.
"""

from __future__ import annotations

from .app import main

__all__ = ["main"]
