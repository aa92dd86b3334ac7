"""The registry for runs on other machines, the Prefect way: its text in a Prefect block.

A sharded monitor (flows/shard.py) reads the registry where it runs, stores the text in a block
named `agentwatch-registry-<first 16 hex digits of its SHA-256>` (written once per content: a
registry that did not change is not written again) and passes `block:<name>` to its shards, so a
worker on any machine monitors exactly the fleet the parent validated, without a copy of the file.

`registry_path` may be `block:NAME` wherever a flow takes it: `load_fleet` reads the block (or the
file) and the domain parses the text (agentwatch.registry.parse_registry). The text is kept as a
secret field: header values and URL credentials may be written in a registry, and the UI shows a
secret field obfuscated (the server stores block data encrypted).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agentwatch.errors import Problem, RegistryError
from agentwatch.registry import Registry, load_registry, parse_registry, read_registry_text

__all__ = ["BLOCK_PREFIX", "SNAPSHOT_PREFIX", "RegistryText", "block_name_of", "load_fleet", "read_text", "snapshot"]

BLOCK_PREFIX = "block:"
SNAPSHOT_PREFIX = "agentwatch-registry-"


class RegistryText(Block):
    """The text of an agentwatch registry (fleet.yaml)."""

    _block_type_name = "agentwatch registry"
    _block_type_slug = "agentwatch-registry"
    _description = "The text of an agentwatch registry, for monitor runs on machines without the file."

    text: SecretStr = Field(description="The registry YAML (secret: header values may be written in it).")
    source: str = Field(default="", description="Where the monitor read it from.")


def block_name_of(registry_path: str) -> str | None:
    """NAME for `block:NAME`, else None (a file path)."""
    return registry_path.removeprefix(BLOCK_PREFIX).strip() if registry_path.startswith(BLOCK_PREFIX) else None


async def read_text(registry_path: str) -> tuple[str, str]:
    """The registry's text and where it came from: a file, or a block for `block:NAME`.
    RegistryError when there is no such file or block."""
    name = block_name_of(registry_path)
    if name is None:
        return await asyncio.to_thread(read_registry_text, registry_path), str(Path(registry_path))
    try:
        block: RegistryText = await RegistryText.aload(name)
    except ValueError as exc:  # Prefect's answer for a block that does not exist
        raise RegistryError(registry_path, [Problem(None, "", f"no registry block named {name!r}: {exc}")]) from None
    return block.text.get_secret_value(), registry_path


async def load_fleet(registry_path: str) -> Registry:
    """The validated registry from a file, or from a block for `block:NAME`."""
    if block_name_of(registry_path) is None:
        return load_registry(registry_path)
    text, source = await read_text(registry_path)
    return parse_registry(text, source=source)


async def snapshot(text: str, source: str) -> str:
    """Store `text` in its block (unless a block of that content exists); returns `block:NAME`."""
    name = SNAPSHOT_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    try:
        existing: RegistryText | None = await RegistryText.aload(name)
    except ValueError:
        existing = None
    if existing is None or existing.text.get_secret_value() != text:
        await RegistryText(text=SecretStr(text), source=source).asave(name, overwrite=True)
    return BLOCK_PREFIX + name
