"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), served offline.

Their scripts and stylesheet come from the `fastapi-offline` package (only its static folder,
mounted at `/static/docs`; not its app class), so the pages work on a network without internet
access, and each page is sent with a Content-Security-Policy as strict as the status page's:
scripts from this server only, no inline script.

FastAPI's `get_swagger_ui_html` / `get_redoc_html` start the viewer from an inline <script>,
which such a policy forbids. A nonce per response would allow it, but makes the page differ on
every request and puts a secret-shaped value in every page; these pages are instead fixed
markup whose viewer is started by a small script file of our own (`/static/docs-swagger.js`,
`/static/docs-redoc.js`) that reads the OpenAPI document's URL from a data attribute. Nothing
inline, nothing per request, and the same `script-src 'self'` as the status page.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/static/docs"

# Swagger UI styles its elements through the DOM (element.style), which a CSP does not govern:
# style-src 'self' suffices. ReDoc (styled-components) inserts <style> elements, and builds its
# search index in a Worker made from a blob: URL; only its page allows those two.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src {style}; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; worker-src {worker}; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SWAGGER_CSP = _CSP.format(style="'self'", worker="'none'")
REDOC_CSP = _CSP.format(style="'self' 'unsafe-inline'", worker="blob:")

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{root}{assets}/favicon.png">
{head}</head>
<body>
<div id="{viewer}" data-openapi-url="{openapi}"></div>
<script src="{root}{assets}/{bundle}"></script>
<script src="{root}/static/docs-{viewer_script}.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


def _page(request: Request, kind: str) -> HTMLResponse:
    root = escape(request.scope.get("root_path", ""))
    openapi = escape(f"{request.scope.get('root_path', '')}{request.app.openapi_url}")
    swagger = kind == "swagger"
    title = f"{request.app.title} - {'Swagger UI' if swagger else 'ReDoc'}"
    css = f'<link rel="stylesheet" href="{root}{ASSETS_URL}/swagger-ui.css">\n'
    html = _PAGE.format(
        title=escape(title),
        root=root,
        assets=ASSETS_URL,
        head=css if swagger else "",
        viewer="swagger-ui" if swagger else "redoc",
        openapi=openapi,
        bundle="swagger-ui-bundle.js" if swagger else "redoc.standalone.js",
        viewer_script="swagger" if swagger else "redoc",
    )
    csp = SWAGGER_CSP if swagger else REDOC_CSP
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return _page(request, "swagger")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return _page(request, "redoc")
