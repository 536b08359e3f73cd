"""Turn a 6-field cron expression into the keyword arguments of arq's ``cron()``.

People (and .env files) speak cron; arq wants a set of ints per field. This module is the one
parser for both the worker and the template's post-generation hook (which loads this file from
the rendered project), so a bad expression is refused with the same message when the project is
generated and when the worker starts. That is why it uses the standard library only and imports
nothing from the package.

Fields: ``second minute hour day month weekday``. Each field takes ``*``, ``N``, ``A-B``,
``*/N``, ``A-B/N``, ``A/N`` and comma lists; month also takes ``jan``..``dec`` and weekday
``sun``..``sat`` or 0-7 (0 and 7 are Sunday), converted to arq's Monday=0 .. Sunday=6.
"""

from __future__ import annotations

import re

# (name, lowest, highest) in the order the fields are written.
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 7),
)
_NAMES: dict[str, dict[str, int]] = {
    "month": {
        name: number
        for number, name in enumerate(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
            start=1,
        )
    },
    # Classic cron numbering (Sunday=0); converted to arq's numbering at the end.
    "weekday": {
        name: number
        for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
    },
}
_ALLOWED: dict[str, str] = {
    "month": "1-12 or jan-dec",
    "weekday": "0-7 (0 and 7 are Sunday) or sun-sat",
}
_ITEM = re.compile(r"(?:\*|(?P<a>[0-9A-Za-z]+)(?:-(?P<b>[0-9A-Za-z]+))?)(?:/(?P<step>[0-9]+))?")


class CronError(ValueError):
    """A cron expression that cannot be scheduled; the message names the field and the fix."""


def _allowed(name: str, low: int, high: int) -> str:
    return _ALLOWED.get(name, f"{low}-{high}")


def _number(token: str, name: str, low: int, high: int) -> int:
    """One value of a field, by number or (month, weekday) by name, within the field's range."""
    if token.isascii() and token.isdigit():
        value = int(token)
    elif token.lower() in _NAMES.get(name, {}):
        return _NAMES[name][token.lower()]
    else:
        raise ValueError(f"{token!r} is not a valid value; use {_allowed(name, low, high)}")
    if not low <= value <= high:
        raise ValueError(f"value {value} is out of range {_allowed(name, low, high)}")
    return value


def _parse_field(text: str, name: str, low: int, high: int) -> set[int]:
    """All values one field selects; raises ValueError with the reason, without the context."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f"{item!r} is not understood; use *, N, A-B, */N, A-B/N, A/N or a comma list, "
                f"with values {_allowed(name, low, high)}"
            )
        start, stop, step = low, high, 1
        if match["a"] is not None:
            start = stop = _number(match["a"], name, low, high)
            if match["b"] is not None:
                stop = _number(match["b"], name, low, high)
            elif match["step"] is not None:
                stop = high  # "A/N" means from A to the end of the range
        if start > stop:
            raise ValueError(f"range {start}-{stop} goes backwards; write {stop}-{start}")
        if match["step"] is not None:
            step = int(match["step"])
            if not 1 <= step <= high - low:
                raise ValueError(f"step {step} is out of range 1-{high - low}")
        values.update(range(start, stop + 1, step))
    return values


def parse_cron(expr: str) -> dict[str, set[int] | None]:
    """Parse ``expr`` into arq ``cron()`` kwargs: second, minute, hour, day, month, weekday.

    A field written as ``*`` becomes None (arq's "any"); any other field becomes a set of ints.
    Raises CronError with a message a person can act on.
    """
    fields = expr.split()
    if len(fields) != len(FIELDS):
        names = " ".join(name for name, _, _ in FIELDS)
        raise CronError(f"expected 6 fields ({names}), got {len(fields)} in {expr!r}")
    kwargs: dict[str, set[int] | None] = {}
    for (name, low, high), text in zip(FIELDS, fields, strict=True):
        try:
            kwargs[name] = None if text == "*" else _parse_field(text, name, low, high)
        except ValueError as exc:
            raise CronError(f"field {name!r} in {expr!r}: {exc}") from None
    if kwargs["day"] is not None and kwargs["weekday"] is not None:
        # Classic cron runs when EITHER day field matches; arq runs only when BOTH match.
        raise CronError(
            f"fields 'day' and 'weekday' in {expr!r} are both restricted: classic cron runs when "
            "either matches but arq only when both match, so set one of them to *"
        )
    weekday = kwargs["weekday"]
    if weekday is not None:
        kwargs["weekday"] = {(day - 1) % 7 for day in weekday}  # cron Sunday=0/7 -> arq Monday=0
    return kwargs
