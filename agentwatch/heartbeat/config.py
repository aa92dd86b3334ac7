"""The heartbeat server's limits, one value for the endpoint (server.py) and uvicorn (limits.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """Limits of the endpoint (defaults from Settings: 10 KB bodies, 1 ping/s with bursts of 5,
    requests within 10 s, connections capped below the open-file limit)."""

    max_body_bytes: int = 10 * 1024
    rate: float = 1.0
    burst: int = 5
    flush_interval: float = 0.5
    event_interval: float = 10.0
    request_timeout: float = 10.0
    keep_alive: float = 5.0
    max_connections: int = 0  # 0 = derived from RLIMIT_NOFILE (`connection_cap`)
    max_header_bytes: int = 8 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerConfig:
        return cls(
            max_body_bytes=settings.heartbeat_max_body_bytes,
            rate=settings.heartbeat_rate,
            burst=settings.heartbeat_burst,
            flush_interval=settings.heartbeat_flush_interval,
            event_interval=settings.heartbeat_event_interval,
            request_timeout=settings.heartbeat_request_timeout,
            keep_alive=settings.heartbeat_keep_alive,
            max_connections=settings.heartbeat_max_connections,
        )
