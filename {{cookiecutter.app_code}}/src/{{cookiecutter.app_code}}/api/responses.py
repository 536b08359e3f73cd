"""JSON answers encoded with orjson (several times faster than the standard library), falling
back to FastAPI's encoder for what orjson refuses (an integer beyond 64 bits in params)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    try:
        body = orjson.dumps(content)
    except orjson.JSONEncodeError:
        return JSONResponse(jsonable_encoder(content), status_code, headers=headers)
    return Response(body, status_code, headers=headers, media_type="application/json")


def database_unavailable(method: str) -> JSONResponse:
    """503 when PostgreSQL could not do what the request needed (for a POST: not accepted)."""
    detail = "PostgreSQL is unavailable; retry later"
    if method == "POST":
        detail += " (the job was not accepted: submit it again under the same job id)"
    return JSONResponse(status_code=503, content={"detail": detail}, headers={"Retry-After": "2"})
