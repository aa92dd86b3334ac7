"""The a2a probe: an A2A agent's Agent Card, at its well-known URI.

GET `<url>/.well-known/agent-card.json` (the path is appended to the URL's own path, so one host
may serve several agents under paths), and on a 404 the older `<url>/.well-known/agent.json`. A
URL whose path already ends in `.json` is taken as the card itself. The agent is healthy when the
card is a JSON object with a `name`, a `version` and an interface URL: the first
`supportedInterfaces[].url` (A2A 1.0), else the top-level `url` (0.2-0.3, with its
`additionalInterfaces[].url`). The card's version and protocol version go into details, and
name/version/protocol into `details["identity"]` (agentwatch.drift).

The card is read up to the byte cap; the shared client follows no redirects and verifies TLS.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from ..drift import IDENTITY_KEY, make_identity
from ..errors import BadAnswer
from ..models import ProbeResult
from ..redact import redact_url
from ..registry import AgentSpec
from .tcp import describe_connection_error
from .wire import describe_http_error, read_json_object

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["CARD_PATHS", "card_urls", "judge_card", "probe_a2a"]

CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")


def card_urls(url: str) -> list[httpx.URL]:
    """Where to look for the card, in order."""
    base = httpx.URL(url)
    if base.path.endswith(".json"):
        return [base]
    prefix = base.path.rstrip("/")
    return [base.copy_with(path=prefix + path, query=None, fragment=None) for path in CARD_PATHS]


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _interface_url(card: dict[str, Any]) -> str | None:
    for key in ("supportedInterfaces", "additionalInterfaces"):
        interfaces = card.get(key)
        for interface in interfaces if isinstance(interfaces, list) else []:
            if isinstance(interface, dict) and (url := _text(interface.get("url"))):
                return url
        if key == "supportedInterfaces" and (url := _text(card.get("url"))):
            return url  # 0.2-0.3: the main interface is the top-level url
    return None


def _protocol_version(card: dict[str, Any]) -> str | None:
    interfaces = card.get("supportedInterfaces")
    first = interfaces[0] if isinstance(interfaces, list) and interfaces else None
    version = _text(first.get("protocolVersion")) if isinstance(first, dict) else None
    return version or _text(card.get("protocolVersion"))


def judge_card(card: dict[str, Any], details: dict[str, Any]) -> str:
    """The reason the card is not healthy, or ""; what it says goes into details."""
    name, version, protocol = _text(card.get("name")), _text(card.get("version")), _protocol_version(card)
    interface = _interface_url(card)
    details[IDENTITY_KEY] = make_identity(name, version, protocol)
    details.update(card_version=version, protocol_version=protocol, interface_url=interface and redact_url(interface))
    missing = [
        what for what, value in (("name", name), ("version", version), ("interface URL", interface)) if not value
    ]
    if missing:
        return f"the agent card has no {' and no '.join(missing)}"
    return ""


async def probe_a2a(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Fetch and judge the agent's card; never raises for a failed agent. An httpx timeout is
    re-raised as TimeoutError, so that `run_probe` words every timeout alike."""
    assert agent.probe is not None and agent.probe.a2a is not None
    urls = card_urls(agent.probe.a2a.url)
    timeout = httpx.Timeout(agent.policy.timeout.total_seconds())
    details: dict[str, Any] = {}
    start = time.perf_counter()
    reason = ""
    try:
        for i, url in enumerate(urls):
            details["url"] = redact_url(str(url))
            headers = {"accept": "application/json", "accept-encoding": "identity"}
            async with ctx.http.stream(
                "GET", url, headers=headers, timeout=timeout, follow_redirects=False
            ) as response:
                details["status"] = status = response.status_code
                if status == 404 and i + 1 < len(urls):
                    continue  # an older agent: its card is at the next path
                if status != 200:
                    tried = " (and 404 at " + ", ".join(u.path for u in urls[:i]) + ")" if i else ""
                    reason = f"HTTP {status} for {url.path}{tried}"
                    break
                card = await read_json_object(response, ctx.max_body_bytes, "the agent card")
                details["card_path"] = url.path
                reason = judge_card(card, details)
                break
    except BadAnswer as bad:
        reason = str(bad)
    except httpx.TimeoutException as exc:
        raise TimeoutError(str(exc)) from exc
    except httpx.HTTPError as exc:
        reason = describe_http_error(exc)
    except OSError as exc:
        reason = describe_connection_error(exc)
    latency = (time.perf_counter() - start) * 1000
    return ProbeResult(agent.id, ok=not reason, latency_ms=latency, reason=reason, details=details)
