"""Build the busybox test image (and the example agent image) on a real engine, from scratch.

Used by the Docker tests (tests/integration/docker_support.py) and by bench/docker_ops.py; loaded
by path, so it needs nothing but docker-py. No image registry is reachable: the images are
`FROM scratch` with Debian's static busybox (package busybox-static) copied into the build context.

The engine is shared (other test runs, benchmarks, people): callers pass a tag of their own, and
remove that tag, not the image id, and without force. Builds from the same context with the same
labels share one image id under several tags, and an image another process's container runs
cannot be removed (409); by tag, without force, removal only ever drops the caller's own name.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "deployments" / "agent-image"
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


def static_busybox() -> Path:
    """The static busybox binary, or an error that says which package provides it."""
    for path in BUSYBOX_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError("no /bin/busybox: apt-get install busybox-static (scripts/ensure-docker.sh does)")


def build(client: docker.DockerClient, source: Path, tag: str, labels: dict[str, str]) -> str:
    """Build `source` (a directory with a Dockerfile) plus busybox as `tag`; return the tag."""
    with tempfile.TemporaryDirectory(prefix="agentwatch-image-") as ctx:
        for item in source.iterdir():
            if item.is_file() and item.suffix not in (".py", ".md"):
                shutil.copy2(item, ctx)
        shutil.copy2(static_busybox(), Path(ctx) / "busybox")
        client.images.build(path=ctx, tag=tag, rm=True, forcerm=True, labels=labels)
    return tag


def build_test_image(client: docker.DockerClient, tag: str, labels: dict[str, str]) -> str:
    return build(client, HERE, tag, labels)


def build_example_image(client: docker.DockerClient, tag: str, labels: dict[str, str]) -> str:
    return build(client, EXAMPLE, tag, labels)
