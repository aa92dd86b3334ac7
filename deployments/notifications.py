"""One Prefect notification block per alert route: `CustomWebhookNotificationBlock`, sending each
chat's own payload shape.

Why not `SlackWebhook` and friends: apprise refuses any URL that is not the service's own, so those
blocks cannot point at a receiver on 127.0.0.1 (docs/decisions.md); a custom webhook with the chat's
payload works against the real service and a local receiver alike.

The URL is read from the route's environment variable or Prefect Secret block here, at bootstrap,
and stored only in the block's `secrets` (a SecretDict, obfuscated by the API and the UI); the
block's `url` field is the placeholder `{{url}}`, filled in when it sends. Nothing prints it.
"""

from __future__ import annotations

import os
from typing import Any, cast

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.blocks.system import Secret

from agentwatch.alerts import Route, RouteKind
from agentwatch.errors import BootstrapError

__all__ = ["block_name", "payload_shape", "resolve_url", "route_block"]

# `{{subject}}` and `{{body}}` are what SendNotification renders (deployments/automations.py).
_SHAPES: dict[RouteKind, dict[str, Any]] = {
    "slack": {
        "text": "{{subject}}",  # the notification preview
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*{{subject}}*\n{{body}}"}}],
    },
    # A Teams Workflows webhook ("Post to a channel when a webhook request is received") takes an
    # Adaptive Card; the older Office 365 connectors are retired.
    "teams": {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "type": "AdaptiveCard",
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "{{subject}}",
                            "weight": "Bolder",
                            "size": "Medium",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": "{{body}}", "wrap": True},
                    ],
                },
            }
        ],
    },
    # No @everyone from a reason text: Discord parses no mentions from this message.
    "discord": {"content": "**{{subject}}**\n{{body}}", "allowed_mentions": {"parse": []}},
}


def block_name(route: Route) -> str:
    return f"agentwatch-{route.name}"


def payload_shape(kind: RouteKind) -> dict[str, Any]:
    """The request body template of one chat kind (webhook: the rendered body is the JSON itself)."""
    return _SHAPES.get(kind, {})


async def resolve_url(route: Route) -> str:
    """The route's webhook URL, from its environment variable or Secret block. Never logged."""
    if route.url_env is not None:
        url = os.environ.get(route.url_env, "").strip()
        if not url:
            raise BootstrapError(f"route {route.name!r}: environment variable {route.url_env} is not set")
        return url
    assert route.url_secret is not None
    try:
        secret = cast(Secret[Any], await Secret.aload(route.url_secret))
    except ValueError as exc:
        raise BootstrapError(f"route {route.name!r}: no Secret block {route.url_secret!r} ({exc})") from None
    value = secret.get()
    if not isinstance(value, str) or not value.strip():
        raise BootstrapError(f"route {route.name!r}: Secret block {route.url_secret!r} holds no URL text")
    return value.strip()


def route_block(route: Route, url: str) -> CustomWebhookNotificationBlock:
    """The notification block a route wants."""
    common: dict[str, Any] = {"name": f"agentwatch {route.name}", "url": "{{url}}", "secrets": {"url": url}}
    if route.kind == "webhook":
        # The automation renders the whole event payload as JSON into `body`: send it as is.
        return CustomWebhookNotificationBlock(
            **common, form_data="{{body}}", headers={"Content-Type": "application/json"}
        )
    return CustomWebhookNotificationBlock(**common, json_data=payload_shape(route.kind))


def block_fingerprint(block: CustomWebhookNotificationBlock) -> dict[str, Any]:
    """What makes two blocks the same, secrets included (compared in memory, never shown)."""
    data = block.model_dump(mode="python", exclude={"secrets"})
    data = {k: v for k, v in data.items() if not k.startswith("_") and k != "block_type_slug"}
    data["secrets"] = block.secrets.get_secret_value()
    return data
