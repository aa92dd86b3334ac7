"""Scrub secrets out of text before it is stored or shown: reasons, details, log lines.

A probe's reason is often an error message written by a library (httpx, h11, anyio) or by the
target itself, and such messages quote what was sent: "Illegal header value b'Bearer ...'", a
broken status line that echoes the request. Whatever a probe returns passes through
`redact_result` in the probe dispatcher, the one boundary before the store, events, artifacts and
logs; the store may call `redact_text` again with the same secrets (scrubbing twice is harmless).

Two kinds of secret are hidden:

- the agent's own: every request header value of its probe and the credentials of its URL
  (user info, and the values of query parameters named like a credential), whatever the probe
  kind, and the values it takes from the monitor's environment (`{env: VAR}`), in each form they
  take in a message (raw, stripped, quoted by `repr`, percent-encoded, as HTTP Basic base64);
- anyone's: user info in any URL (`scheme://user:pass@host` -> `scheme://***@host`) and
  credential-like query parameters (`?token=abc` -> `?token=***`).

Pure functions of their arguments; nothing here reads settings, files or the environment.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .models import ProbeResult
from .registry import AgentSpec
from .registry.urls import REDACTED, SECRET_PARAM, redact_url

__all__ = ["REDACTED", "agent_secrets", "expand_secrets", "redact_result", "redact_text", "redact_url", "redact_value"]

# Shorter values are not hidden: replacing every "ab" of a message would garble it for no gain.
MIN_SECRET_CHARS = 4
_SCHEMES = frozenset({"basic", "bearer", "digest", "token", "apikey", "api-key"})


def agent_secrets(agent: AgentSpec, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The strings to hide from everything said about `agent`, longest first.

    Whatever its probe kind: the values of its `headers`, the credentials of its `url`, and the
    values its `env` takes from the monitor's environment (`{env: VAR}`, looked up in `environ`
    when given; plain-text `env` values are written in the registry and are not secrets).
    """
    probe = agent.probe
    spec = getattr(probe, probe.kind, None) if probe is not None else None
    if spec is None:
        return ()
    values: list[str] = [v for v in (getattr(spec, "headers", None) or {}).values() if isinstance(v, str)]
    if isinstance(url := getattr(spec, "url", None), str):
        values.extend(_url_credentials(url))
    if environ is not None:
        for value in (getattr(spec, "env", None) or {}).values():
            if isinstance(var := getattr(value, "env", None), str) and (resolved := environ.get(var)):
                values.append(resolved)
    return expand_secrets(values)


def expand_secrets(values: Iterable[str]) -> tuple[str, ...]:
    """Each secret in every form a message may quote it, longest first (so a whole header value
    is replaced before the token inside it)."""
    forms: set[str] = set()
    for value in values:
        for core in {value, value.strip(), _credential_part(value)}:
            if len(core.strip()) < MIN_SECRET_CHARS:
                continue
            forms.update(
                {
                    core,
                    repr(core)[1:-1],  # str repr: "\n" as a backslash and an n
                    repr(core.encode("utf-8", "backslashreplace"))[2:-1],  # b'...' as h11 quotes it
                    quote(core, safe=""),
                }
            )
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=lambda f: (-len(f), f)))


def _credential_part(value: str) -> str:
    """ "Bearer abc" -> "abc": the part after an auth scheme, which an error may quote alone."""
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() in _SCHEMES else value


@functools.lru_cache(maxsize=65536)
def _url_credentials(url: str) -> tuple[str, ...]:
    """The credentials written in `url`, once per distinct URL (a probe of every agent asks each
    cycle, and splitting the URL cost 40 us a probe)."""
    try:
        parts = urlsplit(url.strip())
        username, password = parts.username, parts.password
    except ValueError:
        return ()
    found: list[str] = []
    if username or password:
        user, secret = unquote(username or ""), unquote(password or "")
        found.extend(v for v in (user, secret) if v)
        # httpx sends URL credentials as HTTP Basic auth: a server that echoes the request shows this.
        found.append(base64.b64encode(f"{user}:{secret}".encode()).decode("ascii"))
        userinfo = parts.netloc.rpartition("@")[0]
        found.append(userinfo)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if SECRET_PARAM.search(name):
            found.append(value)
    return tuple(found)


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with each of `secrets` (from `agent_secrets`) and any URL credential replaced by ***."""
    if not text:
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return redact_url(text)


def redact_value(value: Any, secrets: Sequence[str] = ()) -> Any:
    """`value` with every string in it redacted (dicts, lists and tuples walked; keys kept)."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, secrets) for v in value)
    return value


def redact_result(result: ProbeResult, secrets: Sequence[str] = ()) -> ProbeResult:
    """The result with its reason and details redacted; the same object when nothing changed."""
    reason = redact_text(result.reason, secrets)
    details = redact_value(result.details, secrets) if result.details else result.details
    if reason == result.reason and details == result.details:
        return result
    return dataclasses.replace(result, reason=reason, details=details)
