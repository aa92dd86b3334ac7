#!/bin/sh
# The example agent: /health answers once the warm-up is over; SIGTERM stops it cleanly (exit 0),
# so `docker stop` and agentwatch's shutdown read as "stopped", never "failed".
mkdir -p /www
( sleep "${AGENT_WARMUP:-3}"; echo ok > /www/health ) &
httpd -f -p 8080 -h /www &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit 0' TERM INT
wait "$server"
