"""Reading a registry: YAML text or a file in, a validated Registry out.

A bad file is rejected whole with every problem named by agent id and field path; nothing is
half-loaded.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import Problem, RegistryError
from ..settings import get_settings
from .references import raw_reference_problems, reference_problems
from .specs import Registry

__all__ = ["clear_registry_cache", "load_registry", "parse_registry", "read_registry_text", "validate_registry"]

# The last registry parsed from each of the last few sources, with the sha256 of its text: the
# monitor loads the same file every cycle, and a 10,000-agent file costs seconds to parse and
# validate. A Registry is frozen and nothing mutates its lists and dicts after load, so one object
# is handed to every caller. A new text from a source replaces its entry (an edited file leaves no
# stale registry behind); a 10,000-agent Registry holds about 30 MB, so beyond CACHE_AGENTS agents
# in all the oldest entries go (the newest is always kept).
CACHE_SIZE = 4
CACHE_AGENTS = 100_000
_cache: OrderedDict[str, tuple[str, Registry]] = OrderedDict()
_cache_lock = threading.Lock()


def load_registry(path: str | Path, max_bytes: int | None = None) -> Registry:
    """Read and validate a registry file; raise RegistryError naming every problem.

    A file over `max_bytes` (default: the AGENTWATCH_REGISTRY_MAX_BYTES setting) is refused before
    it is parsed: YAML costs about twenty times its size in memory.
    """
    cap = get_settings().registry_max_bytes if max_bytes is None else max_bytes
    return parse_registry(read_registry_text(path, cap), source=str(Path(path)), max_bytes=cap)


def read_registry_text(path: str | Path, max_bytes: int | None = None) -> str:
    """A registry file's text, unparsed (what a sharded monitor hands its shards); RegistryError
    when it cannot be read, is not UTF-8 or is over `max_bytes` (as load_registry)."""
    path = Path(path)
    cap = get_settings().registry_max_bytes if max_bytes is None else max_bytes
    try:
        with path.open("rb") as file:
            # Read one byte past the cap rather than trust a stat: the file may grow, or be a pipe.
            data = file.read(cap + 1)
    except OSError as exc:
        raise RegistryError(str(path), [Problem(None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    if len(data) > cap:
        raise RegistryError(str(path), [_too_large(path, cap)])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(str(path), [Problem(None, "", f"not UTF-8 text (byte {exc.start + 1})")]) from None


def _too_large(path: Path | str, cap: int) -> Problem:
    size = ""
    with contextlib.suppress(OSError):
        size = f"{Path(path).stat().st_size:,} bytes, "
    return Problem(
        None,
        "",
        f"file too large ({size}over the limit of {cap:,} bytes); raise AGENTWATCH_REGISTRY_MAX_BYTES "
        "if the registry really is this large",
    )


_EMPTY_FLEET_HINT = "write `agents: []` for a fleet with no agents"


def parse_registry(text: str, source: str = "<registry>", max_bytes: int | None = None) -> Registry:
    """Validate registry YAML text; raise RegistryError naming every problem.

    An empty document, or one without an `agents:` list, is refused rather than read as a fleet of
    no agents: a truncated or blanked file must not make the monitor forget every agent. A fleet
    with no agents says so: `agents: []`.

    The same text from the same source parsed again in this process returns the same Registry
    object without parsing it again (the last text of each of the last CACHE_SIZE sources is
    kept); a rejected text is never kept, so it is rejected, with every problem, each time.
    """
    cap = get_settings().registry_max_bytes if max_bytes is None else max_bytes
    if len(text) > cap:
        raise RegistryError(source, [_too_large(source, cap)])
    data = text.encode("utf-8")
    if len(data) > cap:
        raise RegistryError(source, [_too_large(source, cap)])
    digest = hashlib.sha256(data).hexdigest()
    with _cache_lock:
        kept = _cache.get(source)
        if kept is not None and kept[0] == digest:
            _cache.move_to_end(source)
            return kept[1]
    with _collector_paused():
        registry = _parse(text, source)
    with _cache_lock:
        _cache[source] = (digest, registry)
        _cache.move_to_end(source)
        while len(_cache) > CACHE_SIZE or (
            len(_cache) > 1 and sum(len(r.agents) for _, r in _cache.values()) > CACHE_AGENTS
        ):
            _cache.popitem(last=False)
    return registry


def clear_registry_cache() -> None:
    """Forget every registry parse_registry kept (tests, benchmarks)."""
    with _cache_lock:
        _cache.clear()


def _parse(text: str, source: str) -> Registry:
    try:
        # The C loader (libyaml) parses a 10,000-agent registry several times faster.
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise RegistryError(source, [Problem(None, "", f"not valid YAML: {exc}")]) from exc
    if raw is None:
        raise RegistryError(source, [Problem(None, "", f"the file is empty (or only comments): {_EMPTY_FLEET_HINT}")])
    if not isinstance(raw, dict):
        raise RegistryError(source, [Problem(None, "", "the top level must be a mapping with an `agents:` list")])
    return validate_registry(raw, source)


_collector_lock = threading.Lock()
_collector_holders = 0
_collector_was_enabled = False


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a registry is built: the YAML document and the
    models are hundreds of thousands of new containers, none of them garbage, and the collections
    they set off (each a walk over every object of the process) took half of a cold parse.
    Reference counting goes on; the collector is back on when the last parse in progress ends."""
    global _collector_holders, _collector_was_enabled
    with _collector_lock:
        if _collector_holders == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _collector_holders += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector_holders -= 1
            if _collector_holders == 0 and _collector_was_enabled:
                gc.enable()


def validate_registry(raw: dict[str, Any], source: str = "<registry>") -> Registry:
    """Validate a parsed registry document; raise RegistryError naming every problem."""
    if "agents" not in raw:
        raise RegistryError(source, [Problem(None, "agents", f"missing: {_EMPTY_FLEET_HINT}")])
    if raw["agents"] is None:
        raise RegistryError(
            source, [Problem(None, "agents", f"empty (every entry commented out?): {_EMPTY_FLEET_HINT}")]
        )
    problems: list[Problem] = []
    agents_raw = raw.get("agents")
    ids: list[Any] = []
    if isinstance(agents_raw, list):
        ids = [a.get("id") if isinstance(a, dict) else None for a in agents_raw]
        for dup, count in Counter(i for i in ids if isinstance(i, str)).items():
            if count > 1:
                problems.append(Problem(dup, "id", f"duplicate id ({count} agents use it)"))
    registry: Registry | None = None
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, ids))
    # Dangling references are named too when the models did not validate: one rejection, every problem.
    problems.extend(reference_problems(registry) if registry is not None else raw_reference_problems(raw))
    if problems or registry is None:
        raise RegistryError(source, problems)
    return registry


def _problems_from(exc: ValidationError, ids: list[Any]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        agent: str | None = None
        if len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):
            index = loc[1]
            ident = ids[index] if index < len(ids) else None
            agent = ident if isinstance(ident, str) and ident else f"#{index + 1}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(Problem(agent, field, message))
    return problems
