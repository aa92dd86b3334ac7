"""Integration fixtures. Docker: a real engine, or a loud skip (a failure when
AGENTWATCH_REQUIRE_DOCKER is set, as in CI). Everything the Docker tests create carries the label
`agentwatch.test=<session id>` and is removed by that label; agentwatch itself is scoped to that
label too (AGENTWATCH_DOCKER_SCOPE), so a test run never touches any other container. Alerts: one
bootstrapped alert fleet per session (alert_fleet.py), shared by the alert test modules. Scale: a
Prefect server on PostgreSQL + Redis (scale_stack.py, `scale_stack`), or a loud skip (a failure when
AGENTWATCH_REQUIRE_SCALE_STACK is set)."""

from __future__ import annotations

from .alert_fleet import alerting_fixture, fleet_fixture  # noqa: F401 (the alert fleet, one per session)
from .docker_support import (  # noqa: F401 (the Docker fixtures, one set per session)
    SESSION,
    TEST_LABEL,
    RunContainer,
    busybox_image_fixture,
    created_fixture,
    docker_fixture,
    docker_scope_fixture,
    example_image_fixture,
    labels_on_fixture,
    run_container_fixture,
)
from .scale_stack import scale_stack_fixture  # noqa: F401 (the PostgreSQL + Redis Prefect server, one per session)
