"""Loading the same registry again: parse_registry keeps the last few validated registries by their
text; the URL checks are cached per URL; neither ever keeps a rejection."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentwatch.errors import RegistryError
from agentwatch.registry import Registry, load_registry, parse_registry, url_problem
from agentwatch.registry import load as load_module
from agentwatch.registry.urls import _header_value_walk, _url_problem, header_value_problem


def fleet(*ids: str, url: str = "http://127.0.0.1:8080/health") -> str:
    return "agents:\n" + "".join(f"  - id: {i}\n    probe: {{http: {{url: '{url}/{i}'}}}}\n" for i in ids)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    load_module.clear_registry_cache()
    yield
    load_module.clear_registry_cache()


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every Registry.model_validate call, counted."""
    calls: list[Any] = []
    original = Registry.model_validate

    def counting(cls: type[Registry], obj: Any, **kwargs: Any) -> Registry:
        calls.append(obj)
        return original(obj, **kwargs)

    monkeypatch.setattr(Registry, "model_validate", classmethod(counting))
    return calls


def test_the_same_text_is_validated_once(validations: list[Any]) -> None:
    text = fleet("web-1", "db-1")
    first = parse_registry(text)
    again = parse_registry(text)
    assert again is first
    assert len(validations) == 1
    assert again.ids == ["web-1", "db-1"]


def test_an_edited_text_is_validated_anew(validations: list[Any]) -> None:
    before = parse_registry(fleet("web-1"))
    after = parse_registry(fleet("web-1", "db-1"))
    assert after is not before
    assert (before.ids, after.ids) == (["web-1"], ["web-1", "db-1"])
    assert len(validations) == 2


def test_a_text_from_another_source_is_kept_apart(validations: list[Any]) -> None:
    text = fleet("web-1")
    assert parse_registry(text, source="a.yaml") is not parse_registry(text, source="b.yaml")
    assert parse_registry(text, source="a.yaml") is parse_registry(text, source="a.yaml")
    assert len(validations) == 2


@pytest.mark.parametrize(
    "text",
    [
        fleet("web-1", url="ftp://127.0.0.1"),  # fails in the models
        fleet("web-1", "web-1"),  # fails across agents
        "agents: [",  # not YAML
    ],
)
def test_a_bad_text_is_rejected_every_time(text: str) -> None:
    first = pytest.raises(RegistryError, parse_registry, text).value
    again = pytest.raises(RegistryError, parse_registry, text).value
    assert str(again) == str(first)
    assert load_module._cache == {}


def test_a_bad_url_raises_every_time_with_the_same_message() -> None:
    url = "http://user:hunter2@127.0.0.1:99999/x"
    messages = [str(pytest.raises(ValueError, url_problem, url).value) for _ in range(2)]
    assert messages[0] == messages[1] == "not a valid URL (Port out of range 0-65535): 'http://***@127.0.0.1:99999/x'"
    assert "hunter2" not in messages[0]


def test_a_good_url_is_checked_once() -> None:
    url = "http://127.0.0.1:8080/checked-once"
    hits = _url_problem.cache_info().hits
    url_problem(url)
    url_problem(url)
    assert _url_problem.cache_info().hits == hits + 1


def test_the_size_limit_holds_for_a_kept_text(validations: list[Any]) -> None:
    text = fleet("web-1")
    parse_registry(text, max_bytes=10_000)
    with pytest.raises(RegistryError, match="file too large"):
        parse_registry(text, max_bytes=10)
    assert len(validations) == 1


def test_a_new_text_replaces_its_sources_entry() -> None:
    parse_registry(fleet("web-1"), source="fleet.yaml")
    parse_registry(fleet("web-1", "db-1"), source="fleet.yaml")
    assert [(source, r.ids) for source, (_, r) in load_module._cache.items()] == [("fleet.yaml", ["web-1", "db-1"])]


def test_the_cache_is_bounded(validations: list[Any]) -> None:
    sources = [f"fleet-{i}.yaml" for i in range(load_module.CACHE_SIZE + 1)]
    text = fleet("web-1")
    for source in sources:
        parse_registry(text, source=source)
    assert list(load_module._cache) == sources[1:]
    parse_registry(text, source=sources[-1])  # kept
    assert len(validations) == len(sources)
    parse_registry(text, source=sources[0])  # the oldest went
    assert len(validations) == len(sources) + 1


def test_large_registries_are_kept_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "CACHE_AGENTS", 3)
    parse_registry(fleet("a-1", "a-2"), source="a.yaml")
    parse_registry(fleet("b-1", "b-2"), source="b.yaml")
    assert list(load_module._cache) == ["b.yaml"]
    parse_registry(fleet("c-1", "c-2", "c-3", "c-4"), source="c.yaml")  # over the limit alone: kept, the newest
    assert list(load_module._cache) == ["c.yaml"]


def test_load_registry_reads_the_file_every_time(tmp_path: Path, validations: list[Any]) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet("web-1"))
    first = load_registry(path)
    assert load_registry(path) is first
    path.write_text(fleet("web-1", "db-1"))
    assert load_registry(path).ids == ["web-1", "db-1"]
    path.write_text(fleet("web-1", url="ftp://127.0.0.1"))
    with pytest.raises(RegistryError):
        load_registry(path)
    assert len(validations) == 3


def test_the_collector_is_left_as_it_was() -> None:
    assert gc.isenabled()
    parse_registry(fleet("web-1"))
    pytest.raises(RegistryError, parse_registry, "agents: [")
    assert gc.isenabled()
    gc.disable()
    try:
        parse_registry(fleet("web-2"))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_agents_with_equal_policies_share_one() -> None:
    text = fleet("a-1", "a-2", "a-3") + "    failure_threshold: 7\n"
    one, two, three = parse_registry(text).agents
    assert one.policy is two.policy
    assert three.policy is not one.policy
    assert (one.policy.failure_threshold, three.policy.failure_threshold) == (3, 7)


def test_the_header_fast_path_answers_as_the_loop() -> None:
    for code in range(0x300):
        ch = chr(code)
        for value in (ch, f"Bearer {ch}x", f"{ch}x", f"x{ch}", "", "\t", "a\tb", " a"):
            assert header_value_problem(value) == _header_value_walk(value), repr(value)
