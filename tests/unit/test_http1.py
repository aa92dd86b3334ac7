"""The fast client's response parser (agentwatch.probes.http1) on bytes alone: every framing, fed
whole and one byte at a time, the cap, decoding, and h11's wording for every answer it refuses."""

from __future__ import annotations

import gzip
import zlib

import pytest

from agentwatch.errors import BadAnswer
from agentwatch.probes.http1 import MAX_HEAD_BYTES, ResponseParser


def parse(raw: bytes, cap: int = 65536, *, eof: bool = True, bytewise: bool = False) -> ResponseParser:
    parser = ResponseParser(cap)
    for piece in [raw[i : i + 1] for i in range(len(raw))] if bytewise else [raw]:
        parser.feed(piece)
    if eof and not parser.done:
        parser.feed_eof()
    return parser


def refused(raw: bytes, *, eof: bool = True) -> str:
    with pytest.raises(BadAnswer) as caught:
        parse(raw, eof=eof)
    return str(caught.value)


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n"
)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(
    ("raw", "status", "body", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello", True),
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 500, b"", True),
        (CHUNKED, 200, b"hello world", True),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 200, b"until the end", False),  # framed by the close
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", 204, b"", True),  # 204: no body, whatever it says
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", 304, b"", True),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!",
            200,
            b"!",
            True,
        ),
        (b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", 301, b"", True),
        (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n!", 200, b"!", True),  # no reason phrase
        (b"HTTP/1.1 200 OK\nContent-Length: 1\n\n!", 200, b"!", True),  # bare LF line ends
        (b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  folded\r\nContent-Length: 1\r\n\r\n!", 200, b"!", True),
    ],
    ids=[
        "length",
        "500",
        "chunked",
        "until-close",
        "http10",
        "conn-close",
        "204",
        "304",
        "1xx",
        "301",
        "no-reason",
        "lf",
        "fold",
    ],
)
def test_framings(raw: bytes, status: int, body: bytes, reusable: bool, bytewise: bool) -> None:
    parser = parse(raw, eof=not reusable, bytewise=bytewise)
    assert (parser.status, bytes(parser.body), parser.done, parser.capped) == (status, body, True, False)
    assert parser.reusable is reusable
    assert parser.received == len(raw)


def test_headers_are_lower_case_names_with_stripped_values() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nX-A:  one  \r\nX-Long: a\r\n\tb\r\nContent-Length: 0\r\n\r\n")
    assert parser.headers == [(b"x-a", b"one"), (b"x-long", b"a b"), (b"content-length", b"0")]


def test_the_head_is_done_before_the_body() -> None:
    parser = ResponseParser(100)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert parser.head_done and not parser.done and parser.status == 200
    parser.feed(b"defghij")
    assert parser.done and bytes(parser.body) == b"abcdefghij"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("cap", [0, 1, 10, 4096])
def test_the_body_stops_at_the_cap(framing: str, cap: int) -> None:
    body = bytes(range(256)) * 100
    head = {
        "length": b"Content-Length: %d\r\n" % len(body),
        "chunked": b"Transfer-Encoding: chunked\r\n",
        "close": b"",
    }[framing]
    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if framing == "chunked" else body
    parser = ResponseParser(cap)
    parser.feed(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + payload[:100])
    if cap > 100:
        assert not parser.done
        parser.feed(payload[100:])
    assert parser.done and parser.capped and not parser.reusable
    assert bytes(parser.body) == body[:cap]
    parser.feed(b"more")  # what arrives after the cap is dropped
    assert bytes(parser.body) == body[:cap]


def test_a_body_of_exactly_the_cap() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd", cap=4, eof=False)
    assert parser.done and bytes(parser.body) == b"abcd"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_encoded_bodies_are_decoded(coding: str) -> None:
    plain = b"hello " * 1000
    if coding == "gzip":
        data = gzip.compress(plain)
    elif coding == "deflate":
        data = zlib.compress(plain)
    else:
        squash = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = squash.compress(plain) + squash.flush()
    name = b"gzip" if coding == "gzip" else b"deflate"
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (name, len(data), data)
    assert bytes(parse(raw, bytewise=True).body) == plain
    capped = parse(raw, cap=10)
    assert bytes(capped.body) == plain[:10] and capped.capped


def test_two_codings_are_undone_in_reverse_order() -> None:
    plain = b"layered " * 500
    data = zlib.compress(gzip.compress(plain))
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, deflate\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
    assert bytes(parse(raw).body) == plain


def test_a_gzip_bomb_never_inflates_past_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MB in about 50 KB
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(bomb), bomb)
    parser = parse(raw, cap=1000)
    assert len(parser.body) == 1000 and parser.capped


def test_an_unknown_coding_is_kept_as_it_is() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc")
    assert bytes(parser.body) == b"abc"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "server disconnected without a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "server disconnected without a response"),
        (b"HTTP/1.1 2OO OK\r\n\r\n", "illegal status line: bytearray(b'HTTP/1.1 2OO OK')"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "illegal status line: bytearray(b'SSH-2.0-OpenSSH')"),
        (b"\r\n", "no response line received"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "illegal header line: bytearray(b'bad header')"),
        (b"HTTP/1.1 200 OK\r\n folded-first: x\r\n\r\n", "continuation line at start of headers"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "conflicting Content-Length headers"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting Content-Length headers"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Only Transfer-Encoding: chunked is supported"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "multiple Transfer-Encoding headers",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            "peer closed connection without sending complete message body (received 3 bytes, expected 10)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "peer closed connection without sending complete message body (incomplete chunked read)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "illegal chunk header: bytearray(b'zz\\r\\n')",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
            "malformed chunk footer: bytearray(b'X\\r') (expected b'\\r\\n')",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
            "cannot decode body: Error -3 while decompressing data: incorrect header check",
        ),
    ],
)
def test_broken_answers_are_refused_in_h11s_words(raw: bytes, reason: str) -> None:
    assert refused(raw) == reason


def test_a_head_past_the_limit_is_refused_before_it_ends() -> None:
    assert refused(b"HTTP/1.1 200 OK\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10), eof=False) == "Receive buffer too long"


def test_a_control_byte_before_the_status_line_is_refused_at_once() -> None:
    assert refused(b"\x00\x01garbage", eof=False) == "illegal request line"
