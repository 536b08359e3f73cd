"""The FastAPI application: `uvicorn {{ cookiecutter.app_code }}.api.main:app`."""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .. import __version__
from ..core.config import get_settings
from ..core.logging import json_lines, setup_logging, silence
from ..core.metrics import process_dead
from ..core.tracing import shutdown_tracing
from ..db import Database, DatabaseUnavailable, Role
from ..db.pool import InvalidValue
from ..ledger.reads import page_database
from ..ledger.submit import HandOver
from ..queue import QueueUnavailable, client, redis_ok, where
from .fast_path import FastSubmit
from .middleware import BodySizeLimit, SecurityHeaders
from .observe import hand_over_metrics, watch
from .observe import install as install_observability
from .responses import database_unavailable
from .routes import batches, control, docs, health, jobs, login, metrics
from .session import install as install_sessions
from .status import routes as status
from .status.formatting import STATIC_DIR

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the API role's pool and the arq pool once; close them on shutdown.

    The API starts without PostgreSQL or Redis: /health answers, /api/v1/ready says what is
    missing, submissions answer 503 without PostgreSQL (and 202 without Redis: the ledger
    keeps them), and both pools connect by themselves once the server is there. A restart
    loop would not bring a database back sooner.
    """
    settings = get_settings()
    setup_logging(settings.log_level)
    json_lines("uvicorn", "uvicorn.error", "uvicorn.access")
    if not settings.api_access_log:
        silence("uvicorn.access")
    app.state.settings = settings
    app.state.database = Database(settings, Role.APP)
    await app.state.database.open(wait=False)
    app.state.page_database = page_database(settings)  # the status page's reads, apart
    await app.state.page_database.open(wait=False)
    app.state.arq = client(settings)
    app.state.hand_over = HandOver(app.state.arq, settings)
    if not await redis_ok(app.state.arq):
        log.warning(
            "%s does not answer: jobs are accepted into the ledger and delivered when it does",
            where(settings),
        )
    # What start-up made (the app, its routes and models, the pools) lives as long as the
    # process: frozen, the garbage collector stops walking it on every full collection (its
    # collections were ~5% of the CPU per submission under `make bench`).
    gc.collect()
    gc.freeze()
    try:
        async with watch(app.state):
            yield
    finally:
        await app.state.hand_over.aclose()  # what is pending goes to Redis (or the dispatcher)
        hand_over_metrics(app.state.hand_over)  # what it left (kept with PROMETHEUS_MULTIPROC_DIR)
        await app.state.arq.aclose()
        await app.state.database.close()
        await app.state.page_database.close()
        shutdown_tracing()
        process_dead(os.getpid())


def create_app() -> FastAPI:
    settings = get_settings().require("api")  # the API's own secrets, and only those
    app = FastAPI(
        title=f"{settings.app_code} API",
        version=__version__,
        summary="Submit jobs, read their status.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are api/routes/docs.py's: offline, with a strict CSP
        redoc_url=None,
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(control.router)
    app.include_router(batches.router)
    app.include_router(status.router)
    app.include_router(login.router)
    app.include_router(docs.router)
    app.include_router(metrics.router)
    install_sessions(app, settings)  # the status page's login (api/session.py)
    # Swagger UI's and ReDoc's files (mounted before /static: the first matching prefix wins).
    app.mount(docs.ASSETS_URL, StaticFiles(directory=docs.ASSETS_DIR), name="docs-static")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return database_unavailable(request.method)

    @app.exception_handler(QueueUnavailable)
    async def _queue_down(request: Request, exc: QueueUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=503,
            content={"detail": "Redis (the job queue) is unavailable; retry later"},
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(InvalidValue)
    async def _invalid_value(request: Request, exc: InvalidValue) -> JSONResponse:
        return _unprocessable(f"{exc}; send text without NUL characters and numbers in range")

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's answer, but echoing an input only when it is short and plain: a 64 KiB
        # params object, NaN or a lone surrogate must not be sent back (or fail to be).
        return JSONResponse(status_code=422, content={"detail": [_plain(e) for e in exc.errors()]})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, RecursionError | ValueError):
            # FastAPI's "There was an error parsing the body": a body that is not JSON, like
            # the JSON syntax errors FastAPI answers with a 422, saying what was wrong.
            return _unprocessable(_parse_error(cause), kind="json_invalid", loc=["body"])
        if exc.status_code == 422 and isinstance(exc.detail, str):
            # Every 422 has the documented shape (a list of errors), whoever raised it.
            return _unprocessable(exc.detail)
        return await http_exception_handler(request, exc)

    app.add_middleware(
        BodySizeLimit,
        limit=(settings.api_max_body_bytes, "API_MAX_BODY_BYTES"),
        paths={batches.router.prefix: (settings.api_max_batch_bytes, "API_MAX_BATCH_BYTES")},
    )
    app.add_middleware(SecurityHeaders)
    install_observability(app)  # metrics and traces around everything else
    # The plain valid submission, answered before all of the above (which it does itself).
    app.add_middleware(FastSubmit, settings=settings)
    return app


ECHO_MAX_CHARS = 200


def _unprocessable(
    message: str, kind: str = "value_error", loc: list[str] | None = None
) -> JSONResponse:
    """A 422 in the shape FastAPI documents for every 422: a list of {loc, msg, type}."""
    error = {"type": kind, "loc": loc or [], "msg": _text(message), "input": None}
    return JSONResponse(status_code=422, content={"detail": [error]})


def _text(value: object) -> str:
    """Text that is sure to encode as UTF-8 (a lone surrogate becomes its escape)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _echo(value: Any) -> Any:
    """An input worth echoing: a short printable string or a plain number, else None."""
    if isinstance(value, str):
        return value if len(value) <= ECHO_MAX_CHARS and value.isprintable() else None
    if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**53):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _plain(error: Mapping[str, Any]) -> dict[str, Any]:
    """One validation error as JSON-safe values."""
    plain = {k: v for k, v in error.items() if k not in {"ctx", "url"}}
    plain["loc"] = [p if isinstance(p, int) else _text(p) for p in error.get("loc", ())]
    plain["msg"] = _text(error.get("msg", "")) + _hint(error)
    plain["input"] = _echo(error.get("input"))
    ctx = error.get("ctx")
    if isinstance(ctx, Mapping):
        plain["ctx"] = {_text(k): _text(v) if _echo(v) is None else v for k, v in ctx.items()}
    return plain


def _hint(error: Mapping[str, Any]) -> str:
    """What to do, for the errors about the body as a whole."""
    if error.get("type") == "json_invalid":
        return ": the body is not valid JSON; send a JSON object"
    if tuple(error.get("loc", ())) == ("body",):
        return (
            ": send a JSON object with job_id, function and params, "
            "with the header Content-Type: application/json"
        )
    return ""


def _parse_error(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply to parse: flatten params"
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 ({cause.reason} at byte {cause.start}): send UTF-8 JSON"
    if "digits" in str(cause):
        return "the JSON body holds a number with too many digits: send it as a string"
    return f"the JSON body could not be parsed ({cause}): send a JSON object"


app = create_app()
