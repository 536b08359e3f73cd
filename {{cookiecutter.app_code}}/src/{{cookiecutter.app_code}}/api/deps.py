"""Dependencies injected into the routes: settings, the API role's pool, Redis, the hand-over
to Redis, the token."""

from __future__ import annotations

import secrets
from typing import Annotated

from arq.connections import ArqRedis
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..core.config import Settings
from ..db import Role
from ..db.pool import Pool
from ..ledger.submit import HandOver


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_pool(request: Request) -> Pool:
    return request.app.state.database[Role.APP]  # type: ignore[no-any-return]


async def get_arq(request: Request) -> ArqRedis:
    return request.app.state.arq  # type: ignore[no-any-return]


async def get_hand_over(request: Request) -> HandOver:
    return request.app.state.hand_over  # type: ignore[no-any-return]


_bearer = HTTPBearer(auto_error=False, description="The API_TOKEN from `.env`.")


async def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Mutating endpoints need `Authorization: Bearer <API_TOKEN>` (compared in constant time)."""
    expected = settings.api_token.get_secret_value().encode()
    given = (credentials.credentials if credentials else "").encode()
    if not credentials or not secrets.compare_digest(given, expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong token: send 'Authorization: Bearer <API_TOKEN>' "
            "with the API_TOKEN from the service's .env",
            headers={"WWW-Authenticate": "Bearer"},
        )


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[Pool, Depends(get_pool)]
ArqDep = Annotated[ArqRedis, Depends(get_arq)]
HandOverDep = Annotated[HandOver, Depends(get_hand_over)]
