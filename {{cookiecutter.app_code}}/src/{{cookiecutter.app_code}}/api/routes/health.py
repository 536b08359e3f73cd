"""Liveness, identity and readiness.

`/health` is open. `/api/v1/ready` is open too, for load balancers and orchestrators, but says
only `ok` or `down` per component without a token: the reasons (host names, ports, roles,
driver messages) are for a caller with API_READ_TOKEN or API_TOKEN. `/api/v1/info` needs one.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ... import __version__
from ...core.heartbeat import live_workers
from ...db import DatabaseUnavailable, get_one
from ...queue import redis_ok
from ..deps import ArqDep, OptionalAccessDep, PoolDep, SettingsDep, read_route
from ..schemas import Health, Info, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    """Touches no dependency, so a database outage does not get the API restarted."""
    return Health(status="ok")


@router.get(
    "/api/v1/info", **read_route(Info, "What runs here, and whether it reaches its database")
)
async def info(settings: SettingsDep, pool: PoolDep) -> Info:
    await get_one(pool, "health.ping")
    return Info(
        app_code=settings.app_code, version=__version__, env=settings.env, database="connected"
    )


@router.get(
    "/api/v1/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A component is not ready"}},
    summary="Readiness: PostgreSQL, Redis and a live worker",
)
async def ready(
    settings: SettingsDep,
    pool: PoolDep,
    arq: ArqDep,
    response: Response,
    access: OptionalAccessDep,
) -> Readiness:
    """Each component `ok` or `down`; with a token (either), what is wrong with it."""
    components: dict[str, str] = {}
    try:
        await get_one(pool, "health.ping")
        components["postgres"] = "ok"
    except DatabaseUnavailable as exc:
        components["postgres"] = f"unavailable: {exc}"
    if await redis_ok(arq):
        components["redis"] = "ok"
        workers = await live_workers(arq, settings.app_code)
        components["worker"] = f"ok ({workers} live)" if workers else "no worker heartbeat in 10 s"
    else:
        components["redis"] = "unavailable: no answer to PING"
        components["worker"] = "unknown: Redis is unavailable"
    ok = all(v.startswith("ok") for v in components.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    if access is None:
        return Readiness(
            status="ready" if ok else "not ready",
            components={k: "ok" if v.startswith("ok") else "down" for k, v in components.items()},
            detail=ANONYMOUS_DETAIL,
        )
    return Readiness(status="ready" if ok else "not ready", components=components)


ANONYMOUS_DETAIL = (
    "each component is ok or down; send 'Authorization: Bearer <API_READ_TOKEN>' for what is wrong"
)
