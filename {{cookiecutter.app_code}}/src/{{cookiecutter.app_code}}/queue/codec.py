"""How jobs and results are written in Redis: JSON, never arq's default pickle."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def serialize(obj: Any) -> bytes:
    """JSON, not arq's default pickle: whoever can write to Redis must not run code here."""
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


def serialize_fast(obj: Any) -> bytes:
    """`serialize` with orjson (a tenth of the API's CPU a batch job went to the standard
    library's encoder), for the hand-over's payloads: their params committed to jsonb first, so
    they hold no NaN, which orjson would write as null. What orjson refuses (an integer beyond
    64 bits) goes through `serialize`. Either way plain JSON that `deserialize` reads."""
    try:
        return orjson.dumps(obj, default=_json_default)
    except orjson.JSONEncodeError:
        return serialize(obj)


def deserialize(data: bytes) -> Any:
    return json.loads(data)
