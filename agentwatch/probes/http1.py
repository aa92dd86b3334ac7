"""An HTTP/1.1 response to a GET, parsed from the bytes as they arrive, keeping a bounded body.

The parser of `agentwatch.probes.fasthttp`, kept free of I/O so that every framing is tested on
bytes alone. It follows h11 (the parser under httpx) rule for rule and word for word, so that an
answer that breaks HTTP/1.1 gets the reason it got through httpx ("illegal status line: ...",
"peer closed connection without sending complete message body (received 10 bytes, expected 100)"):

- the head ends at the first blank line (CRLF or bare LF); it may not pass 100 KiB (httpcore's
  limit); obsolete line folding is joined; every line is checked against h11's grammar;
- 1xx answers are skipped (101 ends the exchange, as in httpcore);
- the body is framed by 204/304 (none), Transfer-Encoding: chunked, Content-Length, or else the
  end of the connection; conflicting or malformed framing headers are refused;
- Content-Encoding gzip and deflate are decoded (others are kept as they are, as httpx does
  without brotli or zstandard), never past the cap: a small gzip bomb cannot inflate.

Only the first `cap` bytes of the (decoded) body are kept; parsing stops there (`capped`).
"""

from __future__ import annotations

import re
import zlib

from ..errors import BadAnswer

__all__ = ["MAX_HEAD_BYTES", "ResponseParser"]

MAX_HEAD_BYTES = 100 * 1024  # httpcore's h11 max_incomplete_event_size

# h11/_abnf.py, as bytes regexes matched whole.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VCHAR = rb"[^\x00\s]"
_FIELD_CONTENT = _FIELD_VCHAR + rb"+(?:[ \t]+" + _FIELD_VCHAR + rb"+)*"
_HEADER_FIELD = re.compile(rb"(?P<name>" + _TOKEN + rb"):[ \t]*(?P<value>(?:" + _FIELD_CONTENT + rb")?)[ \t]*")
_STATUS_LINE = re.compile(rb"HTTP/(?P<version>[0-9]\.[0-9]) (?P<status>[0-9]{3})(?: (?:[ \t]|[^\x00\s])*)?")
_CHUNK_HEADER = re.compile(rb"(?P<size>[0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_DIGITS = re.compile(rb"[0-9]+")
_OBS_FOLD = re.compile(rb"[ \t]+")

# States
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class _Decoder:
    """gzip or deflate as httpx decodes them (deflate: zlib-wrapped, or raw when its first bytes
    are no zlib header), but never more than `limit` bytes out of one call: input it did not get
    to waits in `tail` for the next call."""

    __slots__ = ("coding", "head", "inflate", "tail")

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.inflate = zlib.decompressobj(zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS)
        self.tail = b""
        self.head: bytes | None = b"" if coding == "deflate" else None  # until the zlib header passed

    def decode(self, data: bytes | bytearray, limit: int) -> bytes | bytearray:
        if self.head is not None:
            self.head += data
        data, self.tail = self.tail + data if self.tail else data, b""
        try:
            out = self.inflate.decompress(data, limit)
        except zlib.error as exc:
            if self.head is None:
                raise BadAnswer(f"cannot decode body: {exc}") from None
            head, self.head = self.head, None
            self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(head, limit)
        if self.head is not None and len(self.head) >= 2:
            self.head = None  # a zlib header, checked
        self.tail = self.inflate.unconsumed_tail
        return out


class ResponseParser:
    """Feed it what the connection delivers (`feed`, then `feed_eof` at its end); it raises
    BadAnswer (the reason) for an answer that breaks HTTP/1.1, otherwise fills in:

    `status`, `headers` (lower-case name, value) once `head_done`; `body` (at most `cap` bytes)
    and `done` once the body ended or reached the cap (`capped`); `reusable` when the connection
    may carry another request afterwards; `received` counts every byte fed.
    """

    __slots__ = (
        "_buf",
        "_decoders",
        "_http10",
        "_left",
        "_length",
        "_state",
        "body",
        "cap",
        "capped",
        "headers",
        "received",
        "reusable",
        "status",
    )

    def __init__(self, cap: int) -> None:
        self.cap = max(0, cap)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.capped = False
        self.reusable = False
        self.received = 0
        self._buf = bytearray()
        self._state = _HEAD
        self._left = 0  # bytes left of the Content-Length body, or of the current chunk
        self._length = 0  # the Content-Length
        self._http10 = False
        self._decoders: list[_Decoder] = []

    @property
    def head_done(self) -> bool:
        return self._state != _HEAD

    @property
    def done(self) -> bool:
        return self._state == _DONE

    # -- input

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._state == _DONE:
            self.reusable = False  # bytes nobody asked for: never reuse this connection
            return
        self._buf += data
        self._advance()

    def feed_eof(self) -> None:
        """The peer closed its side. Ends an until-close body; anything else unfinished is an error."""
        self.reusable = False
        state = self._state
        if state == _DONE:
            return
        if state == _HEAD:
            raise BadAnswer("server disconnected without a response")
        if state == _UNTIL_CLOSE:
            self._drain()
            self._state = _DONE
            return
        if state == _LENGTH:
            received = self._length - self._left
            raise BadAnswer(
                "peer closed connection without sending complete message body "
                f"(received {received} bytes, expected {self._length})"
            )
        raise BadAnswer("peer closed connection without sending complete message body (incomplete chunked read)")

    # -- parsing

    def _advance(self) -> None:
        while True:
            state = self._state
            if state == _HEAD:
                if not self._head():
                    return
            elif state == _LENGTH:
                if not self._buf:
                    return
                take = self._take(self._left)
                self._left -= len(take)
                self._keep(take)
                if self._left == 0:
                    self._finish()
            elif state == _UNTIL_CLOSE:
                if not self._buf:
                    return
                self._keep(self._take(len(self._buf)))
            elif state == _CHUNK_SIZE:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    self._check_incomplete()
                    return
                line = self._take(end + 2)
                match = _CHUNK_HEADER.fullmatch(line)
                if match is None:
                    raise BadAnswer(f"illegal chunk header: {line!r}")
                self._left = int(match["size"], 16)
                self._state = _CHUNK_DATA if self._left else _TRAILER
            elif state == _CHUNK_DATA:
                if not self._buf:
                    return
                take = self._take(self._left)
                self._left -= len(take)
                self._keep(take)
                if self._left == 0 and self._state == _CHUNK_DATA:
                    self._state, self._left = _CHUNK_END, 2
            elif state == _CHUNK_END:
                if not self._buf:
                    return
                expected = b"\r\n"[2 - self._left :]
                data = self._take(self._left)
                if data != expected[: len(data)]:
                    raise BadAnswer(f"malformed chunk footer: {data!r} (expected {expected!r})")
                self._left -= len(data)
                if self._left == 0:
                    self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                lines = self._lines()
                if lines is None:
                    return
                _header_fields(lines)  # checked as h11 checks them, then dropped
                self._finish()
            else:  # _DONE
                return

    def _take(self, count: int) -> bytearray:
        out = self._buf[:count]
        del self._buf[:count]
        return out

    def _check_incomplete(self) -> None:
        if len(self._buf) > MAX_HEAD_BYTES:
            raise BadAnswer("Receive buffer too long")

    def _lines(self) -> list[bytearray] | None:
        """Everything up to the first blank line, as lines without their line ends (h11's
        ReceiveBuffer.maybe_extract_lines); None while the blank line has not arrived."""
        buf = self._buf
        if buf[:1] == b"\n":
            del buf[:1]
            return []
        if buf[:2] == b"\r\n":
            del buf[:2]
            return []
        match = _BLANK_LINE.search(buf)
        if match is None:
            self._check_incomplete()
            return None
        lines = self._take(match.end()).split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                del line[-1]
        del lines[-2:]
        return lines

    def _head(self) -> bool:
        if not self._buf:
            return False
        lines = self._lines()
        if lines is None:
            if self._buf[0] < 0x21:
                raise BadAnswer("illegal request line")
            return False
        if not lines:
            raise BadAnswer("no response line received")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise BadAnswer(f"illegal status line: {lines[0]!r}")
        status = int(match["status"])
        headers = _header_fields(lines[1:])
        length, chunked = _framing(headers)
        if status < 200 and status != 101:
            return True  # an informational answer: the real one follows
        self.status, self.headers = status, headers
        self._http10 = match["version"] < b"1.1"
        # "gzip, deflate": deflate was applied last, so it is undone first.
        self._decoders = [_Decoder(c) for c in reversed(_values(headers, b"content-encoding")) if c in _CODINGS]
        if status in (101, 204, 304):
            self._length = 0
            self._finish(reusable=status != 101)
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._length = self._left = length
            self._state = _LENGTH
            if length == 0:
                self._finish()
        else:
            self._state = _UNTIL_CLOSE
        if self._state != _DONE and self.cap == 0:
            self._cut()
        return True

    def _keep(self, data: bytes | bytearray) -> None:
        """Add body bytes (decoded) up to the cap; at the cap the exchange is over."""
        room = self.cap - len(self.body)
        last = len(self._decoders) - 1
        for i, decoder in enumerate(self._decoders):
            data = decoder.decode(data, room if i == last else _STAGE_BYTES)
        self.body += data[:room]
        if len(self.body) >= self.cap:
            self._cut()

    def _drain(self) -> None:
        """At the end of the body: what the decoders held back, up to the cap."""
        while self._state != _DONE and any(d.tail for d in self._decoders):
            self._keep(b"")

    def _cut(self) -> None:
        self.capped = True
        self._state = _DONE
        self.reusable = False
        self._buf.clear()

    def _finish(self, reusable: bool = True) -> None:
        self._drain()
        if self._state == _DONE:
            return  # the cap was reached while draining
        self._state = _DONE
        connection = _values(self.headers, b"connection")
        self.reusable = reusable and not self._buf and not self._http10 and "close" not in connection


_STAGE_BYTES = 256 * 1024  # what an inner decoder of a multi-coded body passes on at once
_CODINGS = frozenset({"gzip", "deflate"})


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The comma-separated values of a header, lower-case and stripped (all its lines)."""
    return [
        part.strip().lower()
        for key, value in headers
        if key == name
        for part in value.decode("latin-1").split(",")
        if part.strip()
    ]


def _header_fields(lines: list[bytearray]) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of each header line, folded lines joined; BadAnswer for a line
    h11 would refuse."""
    fields: list[tuple[bytes, bytes]] = []
    last: bytearray | None = None
    joined: list[bytearray] = []
    for line in lines:
        fold = _OBS_FOLD.match(line)
        if fold:
            if last is None:
                raise BadAnswer("continuation line at start of headers")
            last += b" " + line[fold.end() :]
            continue
        last = bytearray(line)
        joined.append(last)
    for line in joined:
        match = _HEADER_FIELD.fullmatch(line)
        if match is None:
            raise BadAnswer(f"illegal header line: {line!r}")
        fields.append((match["name"].lower(), bytes(match["value"])))
    return fields


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) as h11 validates them."""
    length: bytes | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            lengths = {part.strip() for part in value.split(b",")}
            if len(lengths) != 1:
                raise BadAnswer("conflicting Content-Length headers")
            one = lengths.pop()
            if not _DIGITS.fullmatch(one) or len(one) > 20:
                raise BadAnswer("bad Content-Length")
            if length is not None and length != one:
                raise BadAnswer("conflicting Content-Length headers")
            length = one
        elif name == b"transfer-encoding":
            if chunked:
                raise BadAnswer("multiple Transfer-Encoding headers")
            if value.lower() != b"chunked":
                raise BadAnswer("Only Transfer-Encoding: chunked is supported")
            chunked = True
    return (int(length) if length is not None else None), chunked
