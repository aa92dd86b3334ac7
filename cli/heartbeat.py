"""`agentwatch heartbeat-server REGISTRY [--host 127.0.0.1] [--port 8787] [--access-log]`: serve
the heartbeat push endpoint (agentwatch.heartbeat.server), with agents' tokens from their
environment variables or Prefect Secret blocks and batched beat events posted to Prefect
(deployments/heartbeat_server.py)."""

from __future__ import annotations

import argparse
import logging
import os

from agentwatch.registry import load_registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore

__all__ = ["add_heartbeat_server_arguments", "run_heartbeat_server"]


def add_heartbeat_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port to listen on (default 8787)")
    p.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")


def run_heartbeat_server(args: argparse.Namespace) -> int:
    from agentwatch.heartbeat.intake import resolve_credentials
    from agentwatch.heartbeat.server import ServerConfig, create_app, serve
    from deployments.heartbeat_server import PrefectBatchSink, load_secrets

    # Prefect may have configured the root logger already (at WARNING); ours still logs at INFO.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("agentwatch").setLevel(logging.INFO)
    registry = load_registry(args.registry)
    specs = {a.id: a.probe.heartbeat for a in registry.agents if a.probe is not None and a.probe.heartbeat}
    secret_names = [s.token_secret for s in specs.values() if s is not None and s.token_secret and not s.token_env]
    credentials = resolve_credentials(registry, os.environ, load_secrets(secret_names) if secret_names else {})
    open_ids = [i for i in specs if i not in credentials.tokens and i not in credentials.unavailable]
    if open_ids:
        logging.getLogger(__name__).warning(
            "%d agent(s) have no token configured and accept pings without one: %s",
            len(open_ids),
            ", ".join(open_ids[:10]),
        )
    settings = get_settings()
    config = ServerConfig.from_settings(settings)
    app = create_app(
        registry,
        StateStore(settings.resolved_database_url()),
        credentials,
        config,
        sink=PrefectBatchSink(f"{args.host}-{args.port}"),
    )
    # Under limits (a request deadline, a connection cap below the open-file limit): slow clients
    # cannot take the server down (agentwatch/heartbeat/limits.py).
    serve(app, args.host, args.port, config, access_log=args.access_log)
    return 0
