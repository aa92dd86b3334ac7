"""A webhook receiver on 127.0.0.1 standing in for Slack, Teams, Discord or any webhook: a real
HTTP server in a thread that records every POST (path, body, arrival time). Also used by
bench/alert_latency.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    body: bytes
    at: float  # time.time() on arrival
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """Everything a person would read in the message, whatever the chat's payload shape."""
        return self.body.decode("utf-8", "replace")


class WebhookReceiver:
    """Records POSTs; answers 200 like the chat services do (Slack answers `ok`)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(self.path, body, time.time(), dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, path: str) -> list[Received]:
        """The POSTs to `path`, whatever their query string (a token, as chat webhook URLs carry)."""
        with self._lock:
            return [r for r in self.received if r.path.split("?", 1)[0] == path]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def wait(self, until: Callable[[WebhookReceiver], bool], timeout: float) -> bool:
        """Poll until `until(self)` holds (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not until(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


@contextmanager
def receiving() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=10)
