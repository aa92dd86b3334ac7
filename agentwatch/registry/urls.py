"""URLs, hosts and header values as a registry file gives them: their shape, checked at load, and
the form in which a URL may be shown (no credentials).

`redact_url` is the primitive under agentwatch.redact, here so the registry's own error messages
can use it without importing anything above the registry.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote, urlsplit

import httpx

__all__ = [
    "HOST",
    "REDACTED",
    "SECRET_PARAM",
    "check_headers",
    "check_url",
    "header_value_problem",
    "is_placeholder",
    "redact_url",
    "url_problem",
]

REDACTED = "***"
# Query parameters whose value is a credential (`?api_key=...`, `?X-Amz-Signature=...`).
SECRET_PARAM = re.compile(
    r"(?i)token|secret|passw|pwd|api[-_]?key|signature|credential|session|(?:^|[-_.])(?:key|sig|auth)$"
)
# The user info runs to the last "@" before the path: a password may contain "@" itself.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s'\"<>]*@")
_QUERY_PARAM = re.compile(r"([?&;])([^=&#\s'\"<>]+)=([^&#\s'\"<>]*)")
# RFC 9110 token (header names) and a host: a DNS name, IPv4 or bracketed IPv6 address.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})|\[[0-9A-Fa-f:.]+\])$")
# Whitespace (str.isspace: `\s` matches the same code points, all 0x110000 checked) or a control.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
# A header value with nothing header_value_problem objects to in its characters: tab, printable ASCII.
_PLAIN_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def redact_url(text: str) -> str:
    """`text` (a URL, or a message quoting URLs) with the user info of every URL and the values of
    credential-like query parameters replaced by ***: a URL as it may be shown."""
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_redact_param, text)
    return text


def _redact_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if value and value != REDACTED and SECRET_PARAM.search(unquote(name)):
        return f"{sep}{name}={REDACTED}"
    return match.group(0)


def is_placeholder(endpoint: str) -> bool:
    text = endpoint.strip()
    return not text or "..." in text or text.lower().startswith("acp://")


def url_problem(url: str) -> None:
    """Raise ValueError saying what makes `url` unusable for an http probe; the message never
    quotes its credentials."""
    _url_problem(url)


# A pure function of the string, so a URL is checked once per process (httpx.URL is most of the
# cost of loading a registry's agents); lru_cache keeps no exception, so a bad URL raises anew.
@functools.lru_cache(maxsize=65536)
def _url_problem(url: str) -> None:
    if _SPACE_OR_CONTROL.search(url):
        raise ValueError(f"URL contains whitespace or a control character: {redact_url(url)!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of 0-65535 or not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}): {redact_url(url)!r}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {redact_url(url)!r}")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"URL port must be 1-65535: {redact_url(url)!r}")
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"not a valid URL ({redact_url(str(exc))}): {redact_url(url)!r}") from None


def check_url(v: str) -> str:
    v = v.strip()
    url_problem(v)
    return v


def header_value_problem(value: str) -> str | None:
    """What makes `value` unsendable as an HTTP header value, without quoting it."""
    if _PLAIN_HEADER_VALUE.fullmatch(value) and value == value.strip(" \t"):
        return None  # the common case, without the walk that names the first bad character
    return _header_value_walk(value)


def _header_value_walk(value: str) -> str | None:
    """header_value_problem character by character: what is wrong, and where."""
    for i, ch in enumerate(value):
        if ch in "\r\n":
            return f"contains a line break (character {i + 1}; a YAML `|` block ends in one: use `|-`)"
        if ch == "\0":
            return f"contains a NUL character (character {i + 1})"
        if (ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F:
            return f"contains a control character (character {i + 1})"
        if ord(ch) > 0x7E:
            return f"contains a non-ASCII character (character {i + 1})"
    if value != value.strip(" \t"):
        return "begins or ends with whitespace"
    return None


def check_headers(v: dict[str, str]) -> dict[str, str]:
    # Checked here, not left to the HTTP client: its error quotes the value, a token most often.
    for name, value in v.items():
        if not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if problem := header_value_problem(value):
            raise ValueError(f"header {name!r}: the value {problem}")
    return v
