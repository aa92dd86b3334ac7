"""Durations as people write them: parsing, formatting and the pydantic field type."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agentwatch.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("5s", 5, id="5s"),
        pytest.param("2m", 120, id="2m"),
        pytest.param("1h", 3600, id="1h"),
        pytest.param("1d", 86400, id="1d"),
        pytest.param("250ms", 0.25, id="250ms"),
        pytest.param("1h30m", 5400, id="1h30m"),
        pytest.param("1h30m15s", 5415, id="1h30m15s"),
        pytest.param("1m500ms", 60.5, id="1m500ms"),
        pytest.param("1.5s", 1.5, id="fractional-unit"),
        pytest.param("0.5h", 1800, id="fractional-hours"),
        pytest.param("30", 30, id="plain-seconds-text"),
        pytest.param("2.5", 2.5, id="plain-fractional-text"),
        pytest.param(30, 30, id="int"),
        pytest.param(2.5, 2.5, id="float"),
        pytest.param(0, 0, id="zero-int"),
        pytest.param("0s", 0, id="zero-text"),
        pytest.param(" 5s ", 5, id="surrounding-space"),
        pytest.param("1h 30m", 5400, id="inner-space"),
        pytest.param("5S", 5, id="uppercase"),
        pytest.param("2M", 120, id="uppercase-minutes"),
        pytest.param(timedelta(minutes=3), 180, id="timedelta"),
    ],
)
def test_parse(value: Any, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    ["abc", "5x", "5s3", "s", "1.5.5s", "5 parsecs", "ms5", "5s-", "5sec", "1h-30m", "-5s", "+5s 5q"],
)
def test_bad_text_is_named_in_error(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    assert "not a duration" in str(info.value)


@pytest.mark.parametrize("text", ["", "   "], ids=["empty", "spaces"])
def test_empty_text(text: str) -> None:
    with pytest.raises(ValueError, match="^empty duration$"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(-1, "-1", id="int"),
        pytest.param(-0.5, "-0.5", id="float"),
        pytest.param("-5", "'-5'", id="text"),
        pytest.param(timedelta(seconds=-1), "datetime.timedelta(days=-1, seconds=86399)", id="timedelta"),
    ],
)
def test_negative_rejected(value: Any, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f"duration must not be negative: {shown}"


@pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
def test_bool_rejected(value: bool) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f"not a duration: {value!r}"


@pytest.mark.parametrize("value", [None, [5], {"s": 5}, b"5s"], ids=["none", "list", "dict", "bytes"])
def test_other_types_rejected(value: Any) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f"not a duration: {value!r}"


@pytest.mark.parametrize("text", ["inf", "nan", "1e400", "99999999999d"])
def test_out_of_range_is_a_value_error_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(5, "5s", id="5s"),
        pytest.param(60, "1m", id="1m"),
        pytest.param(90, "1m30s", id="90s"),
        pytest.param(3600, "1h", id="1h"),
        pytest.param(5400, "1h30m", id="1h30m"),
        pytest.param(3661, "1h1m1s", id="1h1m1s"),
        pytest.param(3605, "1h5s", id="1h5s"),
        pytest.param(86400, "24h", id="a-day-in-hours"),
        pytest.param(0.25, "250ms", id="250ms"),
        pytest.param(0.001, "1ms", id="1ms"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("seconds", [0, 1, 59, 61, 3599, 3600, 7322, 86400 * 3 + 7, 0.25, 0.999])
def test_format_parse_round_trip(seconds: float) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


class _Model(BaseModel):
    timeout: Duration
    grace: Duration | None = None


def test_duration_field_parses_and_serialises() -> None:
    m = _Model(timeout="1m30s", grace=45)
    assert m.timeout == timedelta(seconds=90)
    assert m.grace == timedelta(seconds=45)
    assert m.model_dump() == {"timeout": timedelta(seconds=90), "grace": timedelta(seconds=45)}
    assert m.model_dump(mode="json") == {"timeout": "1m30s", "grace": "45s"}
    assert _Model.model_validate_json(m.model_dump_json()) == m


@pytest.mark.parametrize("value", ["abc", -1, True], ids=["text", "negative", "bool"])
def test_duration_field_rejects(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        _Model(timeout=value)
    (err,) = info.value.errors()
    assert err["loc"] == ("timeout",)
    assert repr(value) in err["msg"]
