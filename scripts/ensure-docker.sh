#!/usr/bin/env bash
# Make a Docker engine available for the Docker tests, idempotently, and say what was done:
# - install docker.io and busybox-static with apt-get when missing (needs root);
# - start dockerd in the background when no engine answers (log: $DOCKERD_LOG);
# - wait until `docker info` answers (up to $DOCKER_WAIT seconds).
# Exit 0 when an engine answers, 1 otherwise. Exports nothing.
set -uo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/tmp/agentwatch-dockerd.log}"
DOCKER_WAIT="${DOCKER_WAIT:-60}"
say() { echo "ensure-docker: $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

engine_answers() { docker info >/dev/null 2>&1; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]} and no apt-get to install them"
    engine_answers && exit 0 || exit 1
  fi
  say "installing ${missing[*]}"
  # A dpkg run interrupted earlier would make apt-get refuse: finish it first.
  as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/tmp/agentwatch-apt.log 2>&1; then
    as_root apt-get update -q >>/tmp/agentwatch-apt.log 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>/tmp/agentwatch-apt.log 2>&1 \
      || { say "apt-get install failed (see /tmp/agentwatch-apt.log)"; }
  fi
else
  say "docker.io and busybox-static are installed"
fi

if engine_answers; then
  say "a Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  say "no dockerd to start"
  exit 1
fi
if pgrep -x dockerd >/dev/null 2>&1; then
  say "dockerd is running but does not answer yet; waiting"
else
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  as_root sh -c "nohup dockerd >'$DOCKERD_LOG' 2>&1 &" || { say "cannot start dockerd (not root?)"; exit 1; }
fi
for _ in $(seq 1 "$DOCKER_WAIT"); do
  if engine_answers; then
    say "the Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
  fi
  sleep 1
done
say "the Docker engine did not answer within ${DOCKER_WAIT}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" 2>/dev/null || true
exit 1
