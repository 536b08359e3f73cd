"""The cron parser: what the worker schedules and what it (and project generation) refuses."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from {{ cookiecutter.app_code }}.core.cron import CronError, parse_cron

ANY = dict.fromkeys(("second", "minute", "hour", "day", "month", "weekday"))

# (id, expression, the fields that are not None): the whole arq kwargs are compared.
GOOD = [
    ("every-10-seconds", "*/10 * * * * *", {"second": {0, 10, 20, 30, 40, 50}}),
    ("hourly", "0 0 * * * *", {"second": {0}, "minute": {0}}),
    ("every-second", "* * * * * *", {}),
    ("every-5-minutes", "0 */5 * * * *", {"second": {0}, "minute": set(range(0, 60, 5))}),
    ("list", "0,15,30,45 * * * * *", {"second": {0, 15, 30, 45}}),
    ("range", "* * 9-17 * * *", {"hour": set(range(9, 18))}),
    ("range-step", "* * 8-18/2 * * *", {"hour": {8, 10, 12, 14, 16, 18}}),
    ("start-step", "5/20 * * * * *", {"second": {5, 25, 45}}),
    ("list-of-ranges", "* 0-2,57-59 * * * *", {"minute": {0, 1, 2, 57, 58, 59}}),
    ("extra-spaces", "  0   0  *  *  *  * ", {"second": {0}, "minute": {0}}),
    ("day-of-month", "* * * 1,15 * *", {"day": {1, 15}}),
    (
        "weekdays-at-3",
        "30 0 3 * * mon-fri",
        {"second": {30}, "minute": {0}, "hour": {3}, "weekday": {0, 1, 2, 3, 4}},
    ),
]

# (id, weekday field, arq weekday): cron Sunday=0 or 7, Monday=1 -> arq Monday=0 .. Sunday=6.
WEEKDAYS = [
    ("sunday-0", "0", {6}),
    ("sunday-7", "7", {6}),
    ("monday-1", "1", {0}),
    ("saturday-6", "6", {5}),
    ("0-and-7-are-one-day", "0,7", {6}),
    ("0-7-is-every-day", "0-7", set(range(7))),
    ("names", "mon,wed", {0, 2}),
    ("names-any-case", "SAT,Sun", {5, 6}),
    ("name-range", "mon-fri", {0, 1, 2, 3, 4}),
    ("every-other-day", "*/2", {6, 1, 3, 5}),
]

# (id, month field, months)
MONTHS = [
    ("numbers", "1,7", {1, 7}),
    ("names", "jan,Jul", {1, 7}),
    ("name-range", "MAR-may", {3, 4, 5}),
    ("quarterly", "*/3", {1, 4, 7, 10}),
]

DOW = "0-7 (0 and 7 are Sunday) or sun-sat"  # the weekday values, as messages word them
NOT_UNDERSTOOD = (
    "is not understood; use *, N, A-B, */N, A-B/N, A/N or a comma list, with values 0-59"
)

# (id, expression, field, reason): the message is exactly "field '<field>' in '<expr>': <reason>".
BAD_FIELDS = [
    ("step-70", "*/70 * * * * *", "second", "step 70 is out of range 1-59"),
    ("step-0", "* */0 * * * *", "minute", "step 0 is out of range 1-59"),
    ("second-60", "60 * * * * *", "second", "value 60 is out of range 0-59"),
    ("hour-25", "* * 25 * * *", "hour", "value 25 is out of range 0-23"),
    ("day-0", "* * * 0 * *", "day", "value 0 is out of range 1-31"),
    ("month-13", "* * * * 13 *", "month", "value 13 is out of range 1-12 or jan-dec"),
    ("weekday-8", "* * * * * 8", "weekday", f"value 8 is out of range {DOW}"),
    ("backwards-range", "* * 17-9 * * *", "hour", "range 17-9 goes backwards; write 9-17"),
    ("unknown-name", "* * * * foo *", "month", "'foo' is not a valid value; use 1-12 or jan-dec"),
    ("month-as-weekday", "* * * * * jan", "weekday", f"'jan' is not a valid value; use {DOW}"),
    ("name-in-minute", "* mon * * * *", "minute", "'mon' is not a valid value; use 0-59"),
    ("non-ascii-digit", "٣ * * * * *", "second", f"'٣' {NOT_UNDERSTOOD}"),
    ("double-range", "1-2-3 * * * * *", "second", f"'1-2-3' {NOT_UNDERSTOOD}"),
    ("empty-list-item", "1,,2 * * * * *", "second", f"'' {NOT_UNDERSTOOD}"),
    ("negative", "-5 * * * * *", "second", f"'-5' {NOT_UNDERSTOOD}"),
]

# (id, expression, number of fields)
BAD_COUNTS = [
    ("5-fields", "*/10 * * * *", 5),
    ("7-fields", "0 0 0 * * * 2030", 7),
    ("empty", "", 0),
]


def ids(cases: Sequence[tuple[object, ...]]) -> list[str]:
    return [str(case[0]) for case in cases]


@pytest.mark.parametrize(("case_id", "expr", "fields"), GOOD, ids=ids(GOOD))
def test_good_expression_gives_arq_kwargs(
    case_id: str, expr: str, fields: dict[str, set[int]]
) -> None:
    assert parse_cron(expr) == {**ANY, **fields}


@pytest.mark.parametrize(("case_id", "text", "expected"), WEEKDAYS, ids=ids(WEEKDAYS))
def test_weekday_is_converted_to_arq_numbering(case_id: str, text: str, expected: set[int]) -> None:
    assert parse_cron(f"0 0 0 * * {text}")["weekday"] == expected


@pytest.mark.parametrize(("case_id", "text", "expected"), MONTHS, ids=ids(MONTHS))
def test_month_numbers_and_names(case_id: str, text: str, expected: set[int]) -> None:
    assert parse_cron(f"0 0 0 1 {text} *")["month"] == expected


@pytest.mark.parametrize(("case_id", "expr", "field", "reason"), BAD_FIELDS, ids=ids(BAD_FIELDS))
def test_bad_field_names_field_and_reason(case_id: str, expr: str, field: str, reason: str) -> None:
    with pytest.raises(CronError) as error:
        parse_cron(expr)
    assert str(error.value) == f"field {field!r} in {expr!r}: {reason}"


@pytest.mark.parametrize(("case_id", "expr", "count"), BAD_COUNTS, ids=ids(BAD_COUNTS))
def test_wrong_number_of_fields(case_id: str, expr: str, count: int) -> None:
    with pytest.raises(CronError) as error:
        parse_cron(expr)
    expected = f"expected 6 fields (second minute hour day month weekday), got {count} in {expr!r}"
    assert str(error.value) == expected


def test_day_and_weekday_together_are_refused_and_say_why() -> None:
    """Classic cron ORs the two day fields, arq ANDs them: refuse rather than surprise."""
    with pytest.raises(CronError) as error:
        parse_cron("0 0 0 1 * mon")
    message = str(error.value)
    assert "'day' and 'weekday' in '0 0 0 1 * mon' are both restricted" in message
    assert "either matches but arq only when both match" in message


def test_cron_error_is_a_value_error() -> None:
    """Callers (settings validation, the template hook) can catch ValueError."""
    assert issubclass(CronError, ValueError)
