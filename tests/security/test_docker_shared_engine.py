"""Threat (class 10 of tests/security/README.md): tests on a shared engine break someone else, or fail themselves.

CI once failed on a clean clone: the suite's teardown force-removed its test image while another
process's container used it (409 Conflict). Each session builds images under tags of its own,
records the containers it starts, and its teardown removes only those, images without force: an
image another process still uses is left to it, with a note, and the teardown does not fail.
Real engine; the other process is a real one (the docker CLI) when there is a CLI.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid

import docker as docker_py
import pytest

from ..integration.docker_support import (
    SESSION,
    TEST_LABEL,
    Created,
    cleanup,
    image_builders,
    remove_containers,
    remove_images,
    status_is,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def start_elsewhere(client: docker_py.DockerClient, image: str, name: str) -> str:
    """A container of `image` started by another process (not this session's), its id."""
    labels = {f"{TEST_LABEL}.stranger": SESSION}  # not this session's scope label, not tracked by it
    if shutil.which("docker"):
        flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
        out = subprocess.run(
            ["docker", "run", "-d", "--name", name, *flags, image, "sh", "-c", "exec /bin/agent"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()
    return str(client.containers.run(image, ["sh", "-c", "exec /bin/agent"], name=name, labels=labels, detach=True).id)


def test_session_images_have_tags_of_their_own(busybox_image: str) -> None:
    assert busybox_image.startswith(f"agentwatch-test:{SESSION}-")


def test_teardown_leaves_an_image_another_process_uses(docker: docker_py.DockerClient) -> None:
    own = Created()
    unique = f"{SESSION}-shared-{uuid.uuid4().hex[:6]}"
    tag = f"agentwatch-test:{unique}"
    own.images.add(tag)
    try:
        image_builders().build_test_image(docker, tag, {f"{TEST_LABEL}.image": unique})
        image_id = docker.images.get(tag).id
        mine = own.track(
            docker.containers.run(tag, ["sh", "-c", "exec /bin/agent"], name=f"aw-{unique}-mine", detach=True)
        )
        theirs = start_elsewhere(docker, tag, f"aw-{unique}-theirs")
        try:
            wait_until(docker.containers.get(theirs), status_is("running"))
            # What the old teardown did: force-remove the image by id. The engine refuses (409).
            with pytest.raises(docker_py.errors.APIError) as refused:
                docker.images.remove(image_id, force=True)
            assert refused.value.status_code == 409

            notes = cleanup(docker, own)  # what this session's teardown runs: no exception
            assert len(notes) == 1 and notes[0].startswith(f"{tag} kept: in use")
            with pytest.raises(docker_py.errors.NotFound):
                docker.containers.get(mine.id)  # ours: removed
            assert docker.containers.get(theirs).status == "running"  # theirs: untouched
            assert docker.images.get(tag).id == image_id  # the image they use: still there
        finally:
            remove_containers(docker, [theirs])
        assert remove_images(docker, [tag]) == []  # once nobody uses it, it goes
        with pytest.raises(docker_py.errors.ImageNotFound):
            docker.images.get(tag)
    finally:
        cleanup(docker, own)
