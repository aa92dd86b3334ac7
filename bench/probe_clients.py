"""Side by side in one run: how many health-check GETs per second each HTTP client does here.

    python bench/probe_clients.py [--gets 5000] [--concurrency 64] [--server-procs 2] [--repeat 3]
                                  [--clients httpx,httpx-aiohttp,aiohttp,fasthttp,probe,raw]
                                  [--modes fresh,keepalive] [--loops asyncio,uvloop]

A server of --server-procs processes on 127.0.0.1 (one listening socket, an asyncio Protocol per
connection, uvloop when installed) answers every GET with 200 and a 15-byte JSON body, keeping the
connection open unless the request says `Connection: close`. Each client then does --gets GETs,
--concurrency in flight (one task per GET behind a semaphore, as the monitor's probe_many does),
reading the body, in two modes: `fresh`, a new connection per GET (as probing distinct hosts
needs), and `keepalive`, connections reused for the one host:port. Clients:

  httpx          httpx.AsyncClient (the pool at --concurrency; no keep-alive pool when fresh)
  httpx-aiohttp  httpx with the aiohttp transport (package httpx-aiohttp), if installed
  aiohttp        aiohttp.ClientSession (force_close when fresh), if installed
  fasthttp       agentwatch.probes.fasthttp.FastHttp: the http probe's client
  probe          the whole http probe: probe_many over --gets agents (run_probe, redaction, the
                 result), with FastHttp (fresh) or FastHttp(keepalive=True)
  raw            the floor: hand-written HTTP/1.1 on an asyncio Protocol, no checks at all

Each (loop, mode, client) runs --repeat times in a fresh event loop, interleaved so that a busy
moment of this shared machine hits every client alike; per run: wall s, CPU s of this process,
GETs/s, errors, and the 1-minute load average when it started. The table gives the range of
GETs/s over the repeats and the median's ratio to the fastest client of the same loop and mode.
The --loops `uvloop` rows need uvloop installed. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

BODY = b'{"status":"ok"}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


# ---------------------------------------------------------------------------------------------
# the server


class _Serve(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            self.transport.write(ANSWER)
            if b"connection: close" in head.lower():
                self.transport.close()
                return


def _server_main(sock: socket.socket) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Serve, sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@contextlib.contextmanager
def agent_server(procs: int) -> Iterator[tuple[str, list[int]]]:
    """(base URL, pids) of a multi-process server on 127.0.0.1; stopped on exit."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
    ctx = mp.get_context("fork")  # the children inherit the listening socket; no threads here yet
    children = [ctx.Process(target=_server_main, args=(sock,), daemon=True) for _ in range(procs)]
    for child in children:
        child.start()
    try:
        time.sleep(0.5)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", [c.pid for c in children if c.pid]
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(5)
        sock.close()


# ---------------------------------------------------------------------------------------------
# the clients: each GETs every URL, `concurrency` at a time, and returns the number of errors

Client = Callable[[list[str], int, bool], Awaitable[int]]


async def _all(urls: list[str], concurrency: int, get: Callable[[str], Awaitable[Any]]) -> int:
    slots = asyncio.Semaphore(concurrency)
    errors = 0

    async def one(url: str) -> None:
        nonlocal errors
        async with slots:
            try:
                await get(url)
            except Exception:
                errors += 1

    await asyncio.gather(*(one(u) for u in urls))
    return errors


async def run_httpx(urls: list[str], concurrency: int, keepalive: bool, transport: Any = None) -> int:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0)
    kwargs: dict[str, Any] = {"transport": transport} if transport is not None else {"limits": limits}
    async with httpx.AsyncClient(timeout=10, trust_env=False, **kwargs) as client:

        async def get(url: str) -> None:
            response = await client.get(url)
            await response.aread()
            if response.status_code != 200:
                raise RuntimeError(response.status_code)

        return await _all(urls, concurrency, get)


async def run_httpx_aiohttp(urls: list[str], concurrency: int, keepalive: bool) -> int:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, force_close=not keepalive))

    return await run_httpx(urls, concurrency, keepalive, transport=AiohttpTransport(client=session))


async def run_aiohttp(urls: list[str], concurrency: int, keepalive: bool) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=not keepalive)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def get(url: str) -> None:
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(response.status)

        return await _all(urls, concurrency, get)


PARSED: dict[str, Any] = {}  # URL -> httpx.URL, parsed before the timed run (the probe caches them too)


async def run_fasthttp(urls: list[str], concurrency: int, keepalive: bool) -> int:
    from agentwatch.probes.fasthttp import FastHttp

    async with FastHttp(keepalive=keepalive, max_idle=concurrency) as client:

        async def get(url: str) -> None:
            async with client.send(client.request(PARSED[url])) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(answer.status)

        return await _all(urls, concurrency, get)


AGENTS: dict[int, Any] = {}  # id(urls) -> the validated agents, made before the timed run


def prepare_agents(urls: list[str]) -> None:
    from agentwatch.registry import validate_registry

    if id(urls) not in AGENTS:
        agents = [{"id": f"a{i}", "probe": {"http": {"url": u}}} for i, u in enumerate(urls)]
        AGENTS[id(urls)] = validate_registry({"defaults": {"timeout": "10s"}, "agents": agents}).agents


async def run_probe(urls: list[str], concurrency: int, keepalive: bool) -> int:
    from agentwatch.probes import probe_many
    from agentwatch.probes.dispatch import make_http_client
    from agentwatch.probes.fasthttp import FastHttp

    async with make_http_client(concurrency) as http, FastHttp(keepalive=keepalive, max_idle=concurrency) as fast:
        results = await probe_many(AGENTS[id(urls)], concurrency=concurrency, http=http, fast_http=fast)
    return sum(not r.ok for r in results)


class _RawGet(asyncio.Protocol):
    """The floor: write the request, find the head's end, read Content-Length bytes. No checks."""

    def __init__(self) -> None:
        self.done: asyncio.Future[int] | None = None
        self.buf, self.need, self.status = b"", -1, 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0 and (end := self.buf.find(b"\r\n\r\n")) >= 0:
            length = self.buf.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
            self.status, self.need, self.buf = int(self.buf[9:12]), int(length), self.buf[end + 4 :]
        if 0 <= self.need <= len(self.buf) and self.done is not None and not self.done.done():
            self.done.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed"))


async def raw_loop(urls: list[str], concurrency: int, timeout: float, keepalive: bool = False) -> Counter[str]:
    """GET every URL (http://host:port/path) with the floor client (`_RawGet`), `concurrency` at a
    time, each within `timeout`; outcomes: the status, "timeout", or the exception's type."""
    loop = asyncio.get_running_loop()
    idle: dict[str, list[_RawGet]] = {}
    slots = asyncio.Semaphore(concurrency)
    connection = b"keep-alive" if keepalive else b"close"

    async def one(url: str) -> str:
        async with slots:
            proto: _RawGet | None = None
            try:
                async with asyncio.timeout(timeout):
                    hostport, _, path = url.split("//", 1)[1].partition("/")
                    kept = idle.get(hostport) if keepalive else None
                    if kept:
                        proto = kept.pop()
                        proto.buf, proto.need = b"", -1
                    else:
                        host, _, port = hostport.rpartition(":")
                        _, proto = await loop.create_connection(_RawGet, host, int(port))
                    proto.done = loop.create_future()
                    proto.transport.write(
                        b"GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n"
                        % (path.encode(), hostport.encode(), connection)
                    )
                    status = await proto.done
                if keepalive:
                    idle.setdefault(hostport, []).append(proto)
                else:
                    proto.transport.close()
                return str(status)
            except TimeoutError:
                if proto is not None:
                    proto.transport.abort()
                return "timeout"
            except OSError as exc:
                return type(exc).__name__

    outcomes = Counter(await asyncio.gather(*(one(u) for u in urls)))
    for kept in idle.values():
        for proto in kept:
            proto.transport.close()
    return outcomes


async def run_raw(urls: list[str], concurrency: int, keepalive: bool) -> int:
    outcomes = await raw_loop(urls, concurrency, 10.0, keepalive)
    return sum(n for outcome, n in outcomes.items() if outcome != "200")


CLIENTS: dict[str, Client] = {
    "httpx": run_httpx,
    "httpx-aiohttp": run_httpx_aiohttp,
    "aiohttp": run_aiohttp,
    "fasthttp": run_fasthttp,
    "probe": run_probe,
    "raw": run_raw,
}
NEEDS = {"httpx-aiohttp": ("aiohttp", "httpx_aiohttp"), "aiohttp": ("aiohttp",)}


def installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# runs and the table


@dataclass
class Case:
    loop: str
    mode: str
    client: str
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    errors: int = 0


def run_once(case: Case, urls: list[str], concurrency: int) -> None:
    runner: Callable[[Any], Any] = asyncio.run
    if case.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    if case.client == "probe":
        prepare_agents(urls)
    if case.client == "fasthttp" and not PARSED:
        import httpx

        PARSED.update((u, httpx.URL(u)) for u in urls)
    load = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    errors = runner(CLIENTS[case.client](urls, concurrency, case.mode == "keepalive"))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    case.rates.append(len(urls) / wall)
    case.cpu.append(cpu)
    case.loads.append(load)
    case.errors += errors
    print(
        f"  {case.loop:8} {case.mode:9} {case.client:14} wall {wall:7.3f} s  cpu {cpu:6.3f} s  "
        f"{len(urls) / wall:8.0f} GET/s  errors {errors}  load {load:.2f}",
        flush=True,
    )


def print_table(cases: list[Case], gets: int, concurrency: int) -> None:
    print(
        f"\n=== GETs/s, {gets} GETs, {concurrency} in flight, body read (range over repeats; ratio = median / best median) ==="
    )
    print(
        f"{'loop':8} {'mode':9} {'client':14} {'GETs/s min-max':>16} {'median':>8} {'ratio':>6} {'cpu ms/GET':>10} {'errors':>6} {'load':>10}"
    )
    for (loop, mode), group in _groups(cases).items():
        best = max(statistics.median(c.rates) for c in group)
        for c in sorted(group, key=lambda c: statistics.median(c.rates)):
            med = statistics.median(c.rates)
            cpu = statistics.median(c.cpu) / gets * 1000
            print(
                f"{loop:8} {mode:9} {c.client:14} {min(c.rates):7.0f}-{max(c.rates):<8.0f} {med:8.0f} "
                f"{med / best:6.2f} {cpu:10.3f} {c.errors:6} {min(c.loads):4.2f}-{max(c.loads):<5.2f}"
            )


def _groups(cases: list[Case]) -> dict[tuple[str, str], list[Case]]:
    groups: dict[tuple[str, str], list[Case]] = {}
    for case in cases:
        if case.rates:
            groups.setdefault((case.loop, case.mode), []).append(case)
    return groups


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gets", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server-procs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--modes", default="fresh,keepalive")
    parser.add_argument("--loops", default="asyncio,uvloop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loops = [name for name in args.loops.split(",") if name and (name != "uvloop" or installed("uvloop"))]
    clients = [c for c in args.clients.split(",") if c]
    for name in clients:
        missing = [m for m in NEEDS.get(name, ()) if not installed(m)]
        if name not in CLIENTS or missing:
            print(
                f"  skipping {name}: {'unknown client' if name not in CLIENTS else 'not installed: ' + ', '.join(missing)}"
            )
    clients = [c for c in clients if c in CLIENTS and all(installed(m) for m in NEEDS.get(c, ()))]
    modes = [m for m in args.modes.split(",") if m]
    import httpx

    print(
        f"agentwatch probe-clients bench {time.strftime('%Y-%m-%d %H:%M')}: gets={args.gets} "
        f"concurrency={args.concurrency} server processes={args.server_procs} repeat={args.repeat} "
        f"cpus={os.cpu_count()} python={sys.version.split()[0]} httpx={httpx.__version__} "
        f"loops={','.join(loops)}",
        flush=True,
    )
    cases = [Case(loop, mode, client) for loop in loops for mode in modes for client in clients]
    with agent_server(args.server_procs) as (base, _pids):
        urls = [f"{base}/agents/a{i:05d}/health" for i in range(args.gets)]
        for _ in range(args.repeat):
            for case in cases:
                run_once(case, urls, args.concurrency)
    print_table(cases, args.gets, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
