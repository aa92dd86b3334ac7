"""Every default the README documents is the default the code has.

The README's settings table (`## Settings`) is parsed, row by row, and so is every default it gives
in its prose as "`AGENTWATCH_X` (value ...)" or "`AGENTWATCH_X`, value ...": changing a default in
agentwatch/settings.py without the README (or the other way round) fails here. Every setting is
documented too, and every documented variable exists.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentwatch.durations import parse_duration
from agentwatch.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
PREFIX = "AGENTWATCH_"
# Read elsewhere than Settings: the CLI's default registry file (`--registry`).
NOT_SETTINGS = {"AGENTWATCH_REGISTRY"}


def settings_table() -> dict[str, str]:
    """`| `AGENTWATCH_X` | default | meaning |` rows of the README's `## Settings` section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (name := re.fullmatch(r"`(AGENTWATCH_[A-Z0-9_]+)`", cells[0])):
            rows[name.group(1)] = cells[1].strip("`")
    return rows


_VALUE = r"(\d+(?:\.\d+)?(?: ?(?:MiB|KiB|ms|min|s|m|h))?|true|false|empty|derived from `ulimit -n`)(?=[ ),;:.]|$)"
_PROSE = re.compile(r"`(AGENTWATCH_[A-Z0-9_]+)`(?: \(|, )" + _VALUE)


def prose_defaults() -> list[tuple[str, str]]:
    """(variable, default) for each default the README gives in running text."""
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2)) for m in _PROSE.finditer(text)]


def documented_value(text: str, default: Any) -> Any:
    """The README's text for a default, as a value of the setting's type."""
    text = text.strip()
    if isinstance(default, bool):
        assert text in ("true", "false"), text
        return text == "true"
    if isinstance(default, timedelta):
        return parse_duration(text.replace(" min", "m"))
    if text == "derived from `ulimit -n`":
        return 0  # the setting's 0: derived from the open-file limit
    if isinstance(default, int):
        number, _, unit = text.partition(" ")
        return int(number) * {"": 1, "KiB": 1024, "MiB": 1024 * 1024}[unit]
    if isinstance(default, float):
        return float(text.removesuffix("s").strip())
    if default in ("", None):
        assert text == "empty", text
        return default
    return text


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings with no AGENTWATCH_* variable set: nothing but the defaults."""
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return Settings()


def test_the_readme_table_is_found() -> None:
    table = settings_table()
    assert len(table) >= 19 and "AGENTWATCH_BATCH_SIZE" in table, table


@pytest.mark.parametrize("variable", sorted(settings_table()))
def test_each_default_in_the_settings_table(variable: str, defaults: Settings, tmp_path: Path) -> None:
    documented = settings_table()[variable]
    if variable == "AGENTWATCH_DATABASE_URL":
        assert documented.startswith("sqlite:///~/")
        expected = "sqlite:///" + str(tmp_path / documented.removeprefix("sqlite:///~/"))
        assert defaults.resolved_database_url() == expected
    elif variable == "AGENTWATCH_REGISTRY":
        from cli.app import build_parser  # the default is taken when the parser is built

        parser = build_parser()
        for argv in (["status"], ["uptime"], ["pause", "a"], ["resume", "a"]):
            assert parser.parse_args(argv).registry == documented, argv
    else:
        field = variable.removeprefix(PREFIX).lower()
        assert field in Settings.model_fields, f"{variable} is documented but is no setting"
        actual = getattr(defaults, field)
        assert actual == documented_value(documented, actual), f"{variable}: README {documented!r}, code {actual!r}"


def test_prose_defaults_are_found() -> None:
    found = dict(prose_defaults())
    # A sample the pattern must keep finding (a README rewording that hides them fails here).
    assert {"AGENTWATCH_RESTART_MAX", "AGENTWATCH_DOCKER_TIMEOUT", "AGENTWATCH_REGISTRY_MAX_BYTES"} <= set(found)


@pytest.mark.parametrize(("variable", "documented"), prose_defaults(), ids=lambda v: str(v))
def test_each_default_given_in_the_text(variable: str, documented: str, defaults: Settings) -> None:
    field = variable.removeprefix(PREFIX).lower()
    assert field in Settings.model_fields, f"{variable} is documented but is no setting"
    actual = getattr(defaults, field)
    assert actual == documented_value(documented, actual), f"{variable}: README {documented!r}, code {actual!r}"


def test_every_setting_is_documented() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [PREFIX + f.upper() for f in Settings.model_fields if f"`{PREFIX}{f.upper()}`" not in text]
    assert missing == [], f"settings the README does not name: {missing}"


def test_every_documented_variable_exists() -> None:
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"\b(AGENTWATCH_[A-Z0-9_]*[A-Z0-9])\b", text))
    unknown = {
        n for n in named if n.removeprefix(PREFIX).lower() not in Settings.model_fields and n not in NOT_SETTINGS
    }
    # Not settings: test switches and prefixes the README names.
    unknown -= {
        "AGENTWATCH_REQUIRE_DOCKER",
        "AGENTWATCH_RESTART",
        "AGENTWATCH_REQUIRE_POSTGRES",
        "AGENTWATCH_REQUIRE_SCALE_STACK",
        "AGENTWATCH_TEST_POSTGRES_URL",
        "AGENTWATCH_TEST_STATE_BACKEND",
    }
    assert unknown == set(), f"the README names variables agentwatch does not read: {sorted(unknown)}"
