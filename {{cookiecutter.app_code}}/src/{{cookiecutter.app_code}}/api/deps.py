"""Dependencies injected into the routes: settings, the API role's pool, Redis, the hand-over
to Redis, the tokens.

Two bearer tokens: API_READ_TOKEN reads (require_read), API_TOKEN reads and writes
(require_write). Each is declared as its own security scheme in the OpenAPI document
(ReadToken, APIToken), so every route says which it takes."""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from ..core.config import Settings
from ..db import Role
from ..db.pool import Pool
from ..ledger.submit import HandOver
from ..queue import ArqRedis
from .schemas import Problem


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_pool(request: Request) -> Pool:
    return request.app.state.database[Role.APP]  # type: ignore[no-any-return]


async def get_arq(request: Request) -> ArqRedis:
    return request.app.state.arq  # type: ignore[no-any-return]


async def get_hand_over(request: Request) -> HandOver:
    return request.app.state.hand_over  # type: ignore[no-any-return]


class Access(StrEnum):
    """What a token may do: `read` (API_READ_TOKEN) or `write`, which reads too (API_TOKEN)."""

    READ = "read"
    WRITE = "write"


_read_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ReadToken",
    description="The API_READ_TOKEN from `.env`: reads only. (API_TOKEN reads too.)",
)
_write_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="APIToken",
    description="The API_TOKEN from `.env`: reads and writes.",
)
Credentials = HTTPAuthorizationCredentials | None


def _same(given: bytes, secret: SecretStr) -> bool:
    expected = secret.get_secret_value().encode()
    return bool(expected) and secrets.compare_digest(given, expected)


def access_of(settings: Settings, token: str) -> Access | None:
    """What `token` may do; None for no known token. Compared in constant time with both
    tokens, both always (no early exit that would tell which one came close)."""
    given = token.encode()
    write, read = _same(given, settings.api_token), _same(given, settings.api_read_token)
    return Access.WRITE if write else Access.READ if read else None


def _unauthorized(credentials: Credentials, needed: str, also: str = "") -> HTTPException:
    what = "wrong token" if credentials else "no token"
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=f"{what}: send 'Authorization: Bearer <{needed}>' with the {needed} "
        f"from the service's .env{also}",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def optional_access(
    settings: Annotated[Settings, Depends(get_settings)],
    read: Annotated[Credentials, Depends(_read_scheme)],
    write: Annotated[Credentials, Depends(_write_scheme)],
) -> Access | None:
    """What the caller's token may do; None without a token or with a wrong one."""
    credentials = read or write
    return access_of(settings, credentials.credentials) if credentials else None


async def require_read(
    settings: Annotated[Settings, Depends(get_settings)],
    read: Annotated[Credentials, Depends(_read_scheme)],
    write: Annotated[Credentials, Depends(_write_scheme)],
) -> Access:
    """Reads need `Authorization: Bearer <API_READ_TOKEN>` or `<API_TOKEN>`; else 401."""
    credentials = read or write
    access = access_of(settings, credentials.credentials) if credentials else None
    if access is None:
        raise _unauthorized(credentials, "API_READ_TOKEN", " (API_TOKEN reads too)")
    return access


async def require_write(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[Credentials, Depends(_write_scheme)],
) -> Access:
    """Writes need `Authorization: Bearer <API_TOKEN>`: 401 without a known token, 403 with
    the read-only one."""
    access = access_of(settings, credentials.credentials) if credentials else None
    if access is None:
        raise _unauthorized(credentials, "API_TOKEN")
    if access is not Access.WRITE:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="this is the read-only token (API_READ_TOKEN): a write needs "
            "'Authorization: Bearer <API_TOKEN>' with the API_TOKEN from the service's .env",
        )
    return access


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[Pool, Depends(get_pool)]
ArqDep = Annotated[ArqRedis, Depends(get_arq)]
HandOverDep = Annotated[HandOver, Depends(get_hand_over)]
OptionalAccessDep = Annotated[Access | None, Depends(optional_access)]


async def get_page_pool(request: Request) -> Pool:
    """The status page's own small pool (ledger.reads.page_database): its reads never take
    the connections submissions need."""
    return request.app.state.page_database[Role.APP]  # type: ignore[no-any-return]


PagePoolDep = Annotated[Pool, Depends(get_page_pool)]


# How a write route answers a request without API_TOKEN (in every write route's `responses`).
WRITE_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No token, or a wrong one: send API_TOKEN"},
    403: {"model": Problem, "description": "The read-only token: a write needs API_TOKEN"},
}


def read_route(
    model: Any, summary: str, answers: dict[int | str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What a read route of the JSON API declares: its model, the read token, that token's
    refusal, PostgreSQL away, and the route's own `answers` (by status code)."""
    return {
        "response_model": model,
        "dependencies": [Depends(require_read)],
        "summary": summary,
        "responses": {
            401: {
                "model": Problem,
                "description": "No token, or a wrong one: send API_READ_TOKEN or API_TOKEN",
            },
            503: {"model": Problem, "description": "PostgreSQL is unavailable; retry later"},
            **(answers or {}),
        },
    }
