"""Reading what agents answer, bounded: JSON bodies, Server-Sent Events and JSON-RPC responses.

Shared by the protocol probes (acp, mcp, a2a). Every reader stops at a byte cap (the probe
context's `max_body_bytes`), so an agent that answers with an endless stream costs bounded memory;
an SSE stream is read only until the awaited response arrives, never to its end.

An answer that is not what the protocol says raises `BadAnswer` (agentwatch.errors), whose message is the probe's
reason as it stands ("the answer is not JSON: ..."). Text quoted from an answer is cut short.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..errors import BadAnswer
from .tcp import describe_connection_error, describe_exception

__all__ = [
    "describe_http_error",
    "member",
    "quote_short",
    "read_capped",
    "read_json_object",
    "rpc_error_text",
    "rpc_response",
    "rpc_response_from_http",
]

_QUOTE_CHARS = 80


def member(value: Any, key: str) -> dict[str, Any]:
    """`value[key]` when `value` is an object and that member is an object too, else {}."""
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else {}


def quote_short(text: str | bytes) -> str:
    """`text` as a short repr for a reason: at most 80 characters of it, on one line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "...")


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """Up to `cap` bytes of the body, and whether there was more (the rest is not read)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            return bytes(body[:cap]), True
    return bytes(body), False


def describe_http_error(exc: httpx.HTTPError, what: str = "the answer") -> str:
    """A short reason for a failed request, never quoting a header value; `what` names the part
    that could not be decoded."""
    if isinstance(exc, httpx.LocalProtocolError):
        # h11's message quotes the offending header value: a token, most often.
        return "the HTTP client refused to send the request (an invalid header name or value)"
    if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc):
        return "server disconnected without a response"
    if isinstance(exc, httpx.DecodingError):
        return f"cannot decode {what}: {describe_exception(exc)}"
    return describe_connection_error(exc)


def _json(data: bytes | str, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadAnswer(f"{what} is not JSON ({exc.__class__.__name__}): {quote_short(data)}") from None


async def read_json_object(response: httpx.Response, cap: int, what: str = "the answer") -> dict[str, Any]:
    """The body as a JSON object; BadAnswer when it is larger than `cap`, not JSON or not an object."""
    body, more = await read_capped(response, cap)
    if more:
        raise BadAnswer(f"{what} is larger than {cap} bytes (AGENTWATCH_MAX_BODY_BYTES)")
    value = _json(body, what)
    if not isinstance(value, dict):
        raise BadAnswer(f"{what} is JSON but not an object: {quote_short(body)}")
    return value


def rpc_response(message: Any, request_id: int | str) -> dict[str, Any] | None:
    """`message` when it is the JSON-RPC 2.0 response to `request_id`; None for another message (a
    notification, a request of the peer's, another id); BadAnswer when it is no JSON-RPC at all."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise BadAnswer(f"not a JSON-RPC 2.0 message: {quote_short(json.dumps(message))}")
    if "method" in message:
        return None
    if "result" not in message and "error" not in message:
        raise BadAnswer(f"a JSON-RPC response with neither result nor error: {quote_short(json.dumps(message))}")
    # An error about the request itself (unparseable, invalid) may come back with a null id.
    if message.get("id") == request_id or ("error" in message and message.get("id") is None):
        return message
    return None


def rpc_error_text(error: Any) -> str:
    """ "JSON-RPC error -32601: Method not found" from a response's `error` member."""
    if not isinstance(error, dict):
        return f"JSON-RPC error {quote_short(json.dumps(error))}"
    code, message = error.get("code"), error.get("message")
    text = f"JSON-RPC error {code}" if isinstance(code, int) else "JSON-RPC error"
    return f"{text}: {quote_short(message)[1:-1]}" if isinstance(message, str) and message else text


async def rpc_response_from_http(response: httpx.Response, request_id: int | str, cap: int) -> dict[str, Any]:
    """The JSON-RPC response to `request_id` from an HTTP answer: one JSON object, a JSON array
    (a batch), or an SSE stream read only until the response arrives. BadAnswer otherwise."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "text/event-stream":
        async for data in _sse_data(response, cap):
            if not data.strip():
                continue  # a priming event (an id and an empty data field)
            found = rpc_response(_json(data, "an SSE event"), request_id)
            if found is not None:
                return found
        raise BadAnswer("the SSE stream ended without a response")
    if kind != "application/json":
        raise BadAnswer(f"unexpected content type {quote_short(kind or 'none')}")
    body, more = await read_capped(response, cap)
    if more:
        raise BadAnswer(f"the answer is larger than {cap} bytes (AGENTWATCH_MAX_BODY_BYTES)")
    value = _json(body, "the answer")
    for message in value if isinstance(value, list) else [value]:
        found = rpc_response(message, request_id)
        if found is not None:
            return found
    raise BadAnswer(f"no response to request {request_id} in the answer: {quote_short(body)}")


async def _sse_data(response: httpx.Response, cap: int) -> AsyncIterator[str]:
    """The data of each event of an SSE stream (its data lines joined by newlines), as they arrive.

    After the WHATWG event-stream format: lines end in CRLF, LF or CR; a blank line ends an event;
    lines starting with ":" are comments; only the `data` field matters here. Bytes are counted as
    they arrive, so neither a long stream nor one endless line can pass the cap.
    """
    data: list[str] = []
    pending = b""
    read = 0
    async for chunk in response.aiter_bytes():
        read += len(chunk)
        if read > cap:
            raise BadAnswer(f"no response in the first {cap} bytes of the SSE stream (AGENTWATCH_MAX_BODY_BYTES)")
        lines = (pending + chunk).splitlines(keepends=True)
        # An unterminated last line, or a CR whose LF may be in the next chunk, waits for more.
        pending = (
            lines.pop() if lines and (lines[-1].endswith(b"\r") or not lines[-1].endswith((b"\n", b"\r"))) else b""
        )
        for raw in lines:
            event = _sse_line(raw.rstrip(b"\r\n").decode("utf-8", "replace"), data)
            if event is not None:
                yield event
    if pending:
        event = _sse_line(pending.rstrip(b"\r\n").decode("utf-8", "replace"), data)
        if event is not None:
            yield event
    if data:  # a stream that ends without the final blank line still delivered its last event
        yield "\n".join(data)


def _sse_line(line: str, data: list[str]) -> str | None:
    """Take one line into `data`; the finished event's data at a blank line, else None."""
    if not line:
        if not data:
            return None
        event = "\n".join(data)
        data.clear()
        return event
    name, _, value = line.partition(":")
    if name == "data":  # a comment line (":...") has an empty name and is skipped with the rest
        data.append(value[1:] if value.startswith(" ") else value)
    return None
