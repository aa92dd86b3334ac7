"""CLI command for alerts:

    agentwatch bootstrap REGISTRY [--interval 30] [--work-pool NAME] [--no-deployments]

Creates (or updates) on the Prefect server in PREFECT_API_URL the deployments, one notification
block per alert route and the automations (deployments/bootstrap.py). Run it again after changing
the registry's `alerts:`; a run that finds everything in place says "nothing to change".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from agentwatch.registry import load_registry

__all__ = ["add_bootstrap_arguments", "run_bootstrap"]


def add_bootstrap_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry")
    p.add_argument(
        "--interval", type=float, default=30.0, help="monitor schedule in seconds; 'stalled' is 3 of them (30)"
    )
    p.add_argument("--work-pool", default=None, help="register the deployments on this work pool (default: none)")
    p.add_argument(
        "--no-deployments", action="store_true", help="leave deployments alone (e.g. after `prefect deploy --all`)"
    )


def run_bootstrap(args: argparse.Namespace) -> int:
    load_registry(args.registry)  # fail fast, before any Prefect import
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            # An ephemeral API would vanish with this process, and everything with it.
            print("error: bootstrap needs a Prefect server: set PREFECT_API_URL", file=sys.stderr)
            return 2
    from deployments.bootstrap import bootstrap

    asyncio.run(
        bootstrap(
            args.registry,
            interval=args.interval,
            work_pool=args.work_pool,
            deployments=not args.no_deployments,
        )
    )
    return 0
