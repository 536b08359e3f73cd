"""The hand-over's payload encoder (orjson) writes what the standard one writes, as the
worker reads it; what orjson refuses goes through the standard one."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from {{ cookiecutter.app_code }}.queue import deserialize, serialize, serialize_fast

PAYLOADS = {
    "plain": {"t": 1, "f": "hello", "a": [], "k": {"name": "Ada", "n": 3, "x": 0.1}, "et": 1},
    "non-ascii": {"k": {"name": "Zoë ✓ 日本"}},
    "nested": {"k": {"a": [1, {"b": [True, None, -2.5e-10]}]}},
    "beyond-64-bits": {"k": {"n": 123456789012345678901234567890}},
    "datetime-and-decimal": {"k": {"at": dt.datetime(2026, 1, 2, 3, 4, 5), "d": Decimal("1.5")}},
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_the_worker_reads_the_same_payload(name: str) -> None:
    payload = PAYLOADS[name]
    assert deserialize(serialize_fast(payload)) == deserialize(serialize(payload))


def test_what_neither_encodes_is_refused_as_before() -> None:
    with pytest.raises(TypeError):
        serialize_fast({"k": {"x": object()}})
