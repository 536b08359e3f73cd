"""How the status page's values become HTML: Jinja (autoescaping, nothing marked safe), its
filters, the context every page shares, and the page's headers.

The Content-Security-Policy forbids inline code; the headers every response gets (nosniff, no
referrer, no framing) are api/middleware.py's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from ... import __version__
from ...core.config import Settings
from ...core.heartbeat import STALE_SECONDS

PACKAGE_DIR = Path(__file__).resolve().parents[2]
STATIC_DIR = PACKAGE_DIR / "web" / "static"
TEMPLATE_DIR = PACKAGE_DIR / "web" / "templates"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "Cache-Control": "no-store",
}


def when(value: datetime | None) -> str:
    """A timestamp as UTC, to the second: '2025-01-31 17:05:09'."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def span(value: timedelta | float | None) -> str:
    """A duration a person reads at a glance: '850 ms', '1.52 s', '3 min 04 s', '2 h 05 min'."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600):02d} h"


def coarse(value: timedelta | None) -> str:
    """A distance in time to the second, for 'in 9 s' and '3 s ago': '0 s', '9 s', '4 min 10 s'."""
    if value is None:
        return ""
    seconds = round(max(0.0, value.total_seconds()))
    return f"{seconds} s" if seconds < 60 else span(timedelta(seconds=seconds))


def pretty_json(value: Any) -> str:
    """JSON for a <pre>: made here, escaped by the template like any other text."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, span=span, coarse=coarse, iso=iso)
    return env


templates = Jinja2Templates(env=_environment())


def base_context(request: Request, settings: Settings, now: datetime) -> dict[str, Any]:
    """What every page's layout (base.html) needs."""
    session = getattr(request.state, "page_session", None)
    return {
        "app_code": settings.app_code,
        "version": __version__,
        "base": request.scope.get("root_path", "").rstrip("/"),
        "now": now,
        "stale_seconds": int(STALE_SECONDS),
        # Set by require_page: the role the page shows, and the CSRF token of its forms.
        "session": session,
        # Full access: the page shows the Cancel and Retry buttons (api/status/actions.py).
        "can_act": session is not None and not session.read_only,
    }


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    return response
