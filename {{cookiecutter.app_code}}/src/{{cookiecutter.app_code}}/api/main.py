"""The FastAPI application: `uvicorn {{ cookiecutter.app_code }}.api.main:app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..core.config import get_settings
from ..core.logging import setup_logging
from ..db import Database, DatabaseUnavailable, Role
from ..queue import QueueUnavailable, connect
from .routes import health, jobs, status

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the API role's pool and the arq pool once; close them on shutdown."""
    settings = get_settings()
    setup_logging(settings.log_level)
    app.state.settings = settings
    app.state.database = Database(settings, Role.APP)
    await app.state.database.open(wait=False)
    app.state.arq = await connect(settings)
    try:
        yield
    finally:
        await app.state.arq.aclose()
        await app.state.database.close()


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title=f"{settings.app_code} API",
        version=__version__,
        summary="Submit jobs, read their status.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(status.router)
    app.mount("/static", StaticFiles(directory=status.STATIC_DIR), name="static")

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=503,
            content={"detail": "PostgreSQL is unavailable; retry later"},
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(QueueUnavailable)
    async def _queue_down(request: Request, exc: QueueUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=503,
            content={"detail": "Redis (the job queue) is unavailable; retry later"},
            headers={"Retry-After": "2"},
        )

    return app


app = create_app()
