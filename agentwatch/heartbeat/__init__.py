"""Heartbeat agents: agents that cannot be probed push beats instead.

    beats.py    the Beat value (a stored row, or a window of pings) and its merge rules
    watch.py    what the monitor does with beats: wake paused agents, clocks, late warnings
    intake.py   the server's per-agent rate limit and the buffer that coalesces pings
    server.py   the push endpoint (`agentwatch heartbeat-server`), a starlette ASGI app
    client.py   HeartbeatClient (async) and SyncHeartbeat / ping (sync), for the agents

The missed-beat check itself is the `heartbeat` probe (agentwatch.probes.heartbeat). Nothing is
imported here eagerly, so the state store can use `beats` without pulling in the server.
"""
