#!/bin/sh
# A stand-in agent: serves nothing, runs until SIGTERM and then exits 0, as a well-behaved agent
# does on `docker stop`. `sleep & wait` so the trap runs at once, not after the sleep.
trap 'exit 0' TERM INT
while :; do
  sleep 1 &
  wait $!
done
