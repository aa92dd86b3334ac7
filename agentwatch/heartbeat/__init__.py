"""Heartbeat agents: agents that cannot be probed push beats instead.

    watch.py    what the monitor does with beats: wake paused agents, clocks, late warnings
    intake.py   the server's per-agent rate limit and the buffer that coalesces pings
    config.py   ServerConfig: the limits of the endpoint and of uvicorn
    limits.py   uvicorn held to limits a caller without a token cannot exhaust
    server.py   the push endpoint (`agentwatch heartbeat-server`), a starlette ASGI app
    client.py   HeartbeatClient (async) and SyncHeartbeat / ping (sync), for the agents

The Beat value is agentwatch.beats (the store keeps beats, and sits below this package); the
missed-beat check itself is the `heartbeat` probe (agentwatch.probes.heartbeat). Nothing is
imported here eagerly: a caller takes only the module it needs (the agents' client pulls in no
server).
"""
