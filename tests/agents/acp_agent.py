"""An ACP agent of the tests' own: it speaks `initialize` over stdio, or misbehaves as told.

    python acp_agent.py MODE

Messages are JSON-RPC 2.0, one a line. MODE is one of:

    ok        checks the request (protocolVersion 1, clientCapabilities, clientInfo), writes a
              notification and a line of stderr first, then answers: protocol 1, agentCapabilities,
              agentInfo named by AGENT_NAME / AGENT_VERSION; exits at the end of its stdin
    stubborn  answers like ok, then ignores the end of stdin and SIGTERM (killing is the only way)
    hang      reads the request and never answers (SIGTERM ignored)
    garbage   answers a line that is not JSON
    version   answers protocolVersion 2
    error     answers a JSON-RPC error
    no-caps   answers without agentCapabilities
    exit      writes "model backend unreachable" to stderr and exits 3 without answering
    leak      writes AGENT_SECRET to stderr and exits 1

With AGENT_PID_FILE set, it first starts a child (`sleep 60`) and writes "PID CHILD_PID" there, so
a test can check that the probe left nothing running. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def answer(request_id: Any, result: dict[str, Any]) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": result})


def problem(request: dict[str, Any]) -> str:
    """What is wrong with an initialize request, after the ACP spec; "" when nothing is."""
    params = request.get("params")
    if request.get("jsonrpc") != "2.0" or request.get("method") != "initialize" or not isinstance(params, dict):
        return "not an initialize request"
    if params.get("protocolVersion") != 1:
        return "protocolVersion must be 1"
    if params.get("clientCapabilities") != {}:
        return "clientCapabilities must be {}"
    info = params.get("clientInfo")
    if not isinstance(info, dict) or not info.get("name") or not info.get("version"):
        return "clientInfo needs a name and a version"
    return ""


def main(mode: str) -> int:
    if pid_file := os.environ.get("AGENT_PID_FILE"):
        child = subprocess.Popen(["sleep", "60"])
        with open(pid_file, "w") as file:
            file.write(f"{os.getpid()} {child.pid}")
    if mode in ("stubborn", "hang"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "exit":
        print("model backend unreachable", file=sys.stderr, flush=True)
        return 3
    if mode == "leak":
        print(f"auth failed with key {os.environ.get('AGENT_SECRET')}", file=sys.stderr, flush=True)
        return 1
    line = sys.stdin.readline()
    request = json.loads(line)
    request_id = request.get("id")
    if mode == "hang":
        while True:
            time.sleep(60)
    if mode == "garbage":
        print("Welcome to the agent! Type /help for help.", flush=True)
        return 0
    if mode == "error":
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32603, "message": "model not configured"}})
        return 0
    if wrong := problem(request):
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": wrong}})
        return 0
    print("agent starting", file=sys.stderr, flush=True)
    send({"jsonrpc": "2.0", "method": "session/update", "params": {"note": "a notification before the answer"}})
    result: dict[str, Any] = {
        "protocolVersion": 2 if mode == "version" else 1,
        "agentCapabilities": {"loadSession": True, "promptCapabilities": {"image": True}},
        "authMethods": [],
        "agentInfo": {
            "name": os.environ.get("AGENT_NAME", "test-agent"),
            "version": os.environ.get("AGENT_VERSION", "1.0.0"),
        },
    }
    if mode == "no-caps":
        del result["agentCapabilities"]
    answer(request_id, result)
    if mode == "stubborn":
        while True:
            time.sleep(60)
    for _ in sys.stdin:  # an ACP agent runs until its client closes stdin
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
