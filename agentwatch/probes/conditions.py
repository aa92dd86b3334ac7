"""Conditions of the http probe beyond its status: a JSON value in the body, and TLS expiry.

**JSON path** (`json: {path: "$.status", equals: "ok"}`): a small subset of JSONPath (RFC 9535),
one value at one place, no wildcards, filters or slices (parsed at load by
agentwatch.registry.conditions):

    $                  the whole document
    .name              a member of an object (letters, digits, `_` and `-`; not first a digit or `-`)
    ["any name"]       a member whose name needs quoting ('single quotes' too; `\\"` and `\\\\` escape)
    [0]  [-1]          an element of an array, counted from the end when negative

e.g. `$.checks[0].status`, `$["dotted.key"].ok`. With `equals`, the value found must equal it as
JSON (`1` equals `1.0`, but `true` is not `1` and `"1"` is not `1`); without `equals`, the path
must merely exist. The body is read up to the probe's cap (AGENTWATCH_MAX_BODY_BYTES): a JSON
document cut short there does not parse, and the reason says so.

**TLS expiry** (`tls_min_days: 14`): the days left on the certificate the server presented for
this very request (read from the TLS connection the response came on, so it is the certificate
that was verified), in whole days, rounded down; fewer than `tls_min_days` fails the check.

Parsing paths and comparing values are pure functions; `certificate_not_after` reads the response.
"""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from ..registry.conditions import Step, format_path, parse_path
from .wire import quote_short

if TYPE_CHECKING:
    from ..registry import HttpProbe

__all__ = [
    "MISSING",
    "certificate_not_after",
    "check_conditions",
    "days_left",
    "format_path",
    "json_equal",
    "lookup",
    "parse_path",
    "peer_not_after",
]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # what `lookup` returns for a path that leads nowhere


def lookup(document: Any, steps: tuple[Step, ...]) -> Any:
    """The value at `steps` in a parsed JSON document, or MISSING."""
    value = document
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return MISSING
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                return MISSING
            value = value[step]
    return value


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON values: numbers by value (1 == 1.0), but a boolean is never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _shown(value: Any) -> str:
    return quote_short(json.dumps(value, ensure_ascii=False))[1:-1]


def json_condition(body: bytes, cap: int, steps: tuple[Step, ...], *, equals: Any, check_equals: bool) -> str:
    """The reason the body fails the JSON condition, or "" when it holds."""
    path = format_path(steps)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        cut = f" (read up to the {cap}-byte cap, AGENTWATCH_MAX_BODY_BYTES)" if len(body) >= cap else ""
        return f"body is not JSON{cut}, so {path} cannot be checked"
    found = lookup(document, steps)
    if found is MISSING:
        return f"{path} not found in the JSON body"
    if check_equals and not json_equal(found, equals):
        return f"{path} is {_shown(found)} (expected {_shown(equals)})"
    return ""


def certificate_not_after(response: httpx.Response) -> datetime | None:
    """When the certificate the server presented for `response` expires (UTC), or None when the
    response came on no TLS connection or the certificate was not verified.

    Call it while the response is open (inside `client.stream(...)`): the connection goes back to
    the pool when it closes. httpcore exposes the connection as the `network_stream` extension;
    its `ssl_object` gives the verified peer certificate as the `ssl` module decodes it.
    """
    stream = response.extensions.get("network_stream")
    return peer_not_after(stream.get_extra_info("ssl_object") if stream is not None else None)


def peer_not_after(ssl_object: object) -> datetime | None:
    """When the verified peer certificate of a TLS connection (`ssl_object`) expires (UTC); None
    for no TLS connection or no verified certificate. The fast client's answers give it as
    `Exchange.tls_object`."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    cert = ssl_object.getpeercert()  # {} unless verified; that is all this probe ever accepts
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return None
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), tz=UTC)


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days from `now` until `not_after`, rounded down (negative once expired)."""
    return (not_after - now).days


def check_conditions(
    spec: HttpProbe,
    body: bytes,
    cap: int,
    not_after: datetime | None,
    details: dict[str, Any],
    now: datetime | None = None,
) -> str:
    """The http probe's `json` and `tls_min_days` conditions: the reason the first one fails, or
    "". Adds what it saw to `details`: `tls_days_left` and `tls_not_after` (ISO 8601)."""
    reason = ""
    if spec.json_ is not None:
        condition = spec.json_
        reason = json_condition(
            body, cap, parse_path(condition.path), equals=condition.equals, check_equals=condition.checks_equality
        )
    if spec.tls_min_days is not None:
        if not_after is None:
            return reason or "no verified TLS certificate to check tls_min_days against"
        left = days_left(not_after, now or datetime.now(UTC))
        details["tls_days_left"] = left
        details["tls_not_after"] = not_after.isoformat()
        if not reason and left < spec.tls_min_days:
            when = f"in {left} day{'' if left == 1 else 's'}" if left >= 0 else "already (it has expired)"
            reason = f"TLS certificate expires {when} (tls_min_days {spec.tls_min_days})"
    return reason
