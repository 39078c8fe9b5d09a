"""The canonical timestamp text: string order must be time order."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tusk_events.errors import StoreError
from tusk_events.store.timestamps import (
    CANONICAL_PATTERN,
    canonical,
    canonical_param,
    from_epoch,
    to_epoch,
)

CANON = re.compile(CANONICAL_PATTERN)
# microsecond-exact instants from year 1 to 9999
micros = st.integers(min_value=-62_135_596_800 * 10**6, max_value=253_402_300_799 * 10**6)


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0, "1970-01-01 00:00:00"),
        (1_704_103_200, "2024-01-01 10:00:00"),
        (1_704_103_200.5, "2024-01-01 10:00:00.5"),
        (1_704_103_200.25, "2024-01-01 10:00:00.25"),
        (1_704_103_200.000001, "2024-01-01 10:00:00.000001"),
        (1_704_103_200.123456, "2024-01-01 10:00:00.123456"),
        (-0.5, "1969-12-31 23:59:59.5"),
    ],
)
def test_from_epoch(ts: float, text: str) -> None:
    assert from_epoch(ts) == text
    assert CANON.fullmatch(text)
    assert to_epoch(text) == pytest.approx(ts, abs=1e-6)


@given(micros, micros)
def test_text_order_is_time_order(a: int, b: int) -> None:
    ta = canonical(datetime(1970, 1, 1) + timedelta(microseconds=a))
    tb = canonical(datetime(1970, 1, 1) + timedelta(microseconds=b))
    assert CANON.fullmatch(ta) and CANON.fullmatch(tb)
    assert (ta < tb) == (a < b)
    assert (ta == tb) == (a == b)


@given(micros)
def test_second_precision_strings_compare_like_instants(us: int) -> None:
    text = canonical(datetime(1970, 1, 1) + timedelta(microseconds=us))
    second = text[:19]  # what datetime('now') writes, what people type
    whole = us - us % 10**6
    assert (text > second) == (us > whole)
    assert (text == second) == (us == whole)


@given(st.floats(min_value=-4e9, max_value=4e9, allow_nan=False))  # float steps < 1 µs
def test_epoch_round_trip_to_the_microsecond(ts: float) -> None:
    assert to_epoch(from_epoch(ts)) == pytest.approx(ts, abs=1e-6)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2024-01-01T10:00:00", "2024-01-01 10:00:00"),
        ("2024-01-01t10:00:00z", "2024-01-01 10:00:00"),
        ("2024-01-01T10:00:00.500Z", "2024-01-01 10:00:00.5"),
        ("2024-01-01T10:00:00,5", "2024-01-01 10:00:00.5"),
        ("2024-01-01T12:30:00+02:30", "2024-01-01 10:00:00"),
        ("2024-01-01T05:00:00-0500", "2024-01-01 10:00:00"),
        ("2024-01-01 10:00", "2024-01-01 10:00:00"),
        ("2024-01-01", "2024-01-01 00:00:00"),
        ("2024-01-01 10:00:00.1234567", "2024-01-01 10:00:00.123456"),
        (datetime(2024, 1, 1, 11, tzinfo=timezone(timedelta(hours=1))), "2024-01-01 10:00:00"),
        (datetime(2024, 1, 1, 10), "2024-01-01 10:00:00"),
        (date(2024, 1, 1), "2024-01-01 00:00:00"),
        (1_704_103_200, "2024-01-01 10:00:00"),
    ],
)
def test_canonical(value: object, text: str) -> None:
    assert canonical(value) == text


@pytest.mark.parametrize(
    "bad", ["yesterday", "2024-13-01 00:00:00", "2024-01-01 25:00:00", True, None, [1]]
)
def test_canonical_refuses_what_is_not_a_time(bad: object) -> None:
    with pytest.raises(StoreError):
        canonical(bad)


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("2024-01-01T10:00:00Z", "2024-01-01 10:00:00"),
        ("2024-01-01 10:00:00.500", "2024-01-01 10:00:00.5"),
        ("2024-01-01 10:00:00", "2024-01-01 10:00:00"),
        ("2024-01-01", "2024-01-01"),  # bare dates stay: they already compare as midnight-or-later
        ('"2024-01-01T10:00:00Z"', '"2024-01-01T10:00:00Z"'),  # JSON text is not a time
        ("user_registered", "user_registered"),
        ("2024-99-01T10:00:00", "2024-99-01T10:00:00"),  # not a date: left for the database
    ],
)
def test_canonical_param(param: str, expected: str) -> None:
    assert canonical_param(param) == expected


def test_to_epoch_reads_other_spellings_and_refuses_garbage() -> None:
    assert to_epoch("2024-01-01T10:00:00Z") == 1_704_103_200
    with pytest.raises(StoreError):
        to_epoch("not a time")
