"""/docs (Swagger UI) and /redoc (ReDoc) in a real browser, with no network but the API's.

Every request to another origin is aborted, as on a network without internet access: both pages
must still render the API's operations, ask nothing of another origin, log no error and break no
rule of their Content-Security-Policy, which must allow no inline script.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from .conftest import DESKTOP, Watch

pytestmark = pytest.mark.browser

RENDER_WAIT_MS = 15_000
# ReDoc 2's menu footer shows Redocly's logo from a hard-coded URL (no option turns it off): the
# page's CSP blocks it before any request leaves (img-src 'self' data:) and ReDoc drops the
# image. That one block is the policy working; any other is a failure.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# What both viewers must show: operations' summaries from the OpenAPI document, and a path.
OPERATIONS = ("Submit a job", "List jobs, newest first", "One job's record")
# Playwright's init scripts run whatever the page's CSP says: this one records the violations
# the page reports to itself, alongside the console messages Watch records.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI}`);
});
"""


@dataclass
class Offline:
    page: Page
    watch: Watch
    origin: str
    asked: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
def offline(browser: Browser, base_url: str) -> Iterator[Offline]:
    """A page that reaches the API and nothing else (every other request is aborted)."""
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    state = Offline(page, watch, origin_of(base_url))
    page.add_init_script(RECORD_VIOLATIONS)

    def route(route: Route) -> None:
        url = route.request.url
        state.asked.append(url)
        if origin_of(url) == state.origin:
            route.continue_()
        else:
            state.aborted.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", route)
    try:
        yield state
    finally:
        context.close()


def directives(csp: str) -> dict[str, list[str]]:
    parsed = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            parsed[words[0].lower()] = words[1:]
    return parsed


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_render_the_api_offline(offline: Offline, path: str) -> None:
    page = offline.page
    response = page.goto(path)
    assert response is not None and response.status == 200, path
    assert response.headers["content-type"].startswith("text/html")

    csp = response.headers.get("content-security-policy")
    assert csp, f"{path} is sent without a Content-Security-Policy"
    policy = directives(csp)
    assert policy.get("script-src") == ["'self'"], f"{path}: script-src {policy.get('script-src')}"
    assert policy.get("default-src") == ["'self'"], csp
    assert policy.get("connect-src") == ["'self'"], csp
    assert policy.get("object-src") == ["'none'"] and policy.get("base-uri") == ["'none'"], csp
    assert policy.get("frame-ancestors") == ["'none'"], csp

    for summary in OPERATIONS:  # ReDoc also has hidden copies (its menu): one must be visible
        shown = page.get_by_text(summary, exact=True).locator("visible=true").first
        expect(shown).to_be_visible(timeout=RENDER_WAIT_MS)
    expect(page.get_by_text("/api/v1/jobs", exact=False).first).to_be_attached()
    page.wait_for_load_state("networkidle")

    assert offline.aborted == [], f"{path} asked other origins for: {offline.aborted}"
    assert any(url.endswith("/openapi.json") for url in offline.asked), offline.asked
    expected = [f"img-src blocked {REDOC_LOGO}"] if path == "/redoc" else []
    violations = page.evaluate("window.__cspViolations")
    assert [v for v in violations if v not in expected] == [], f"{path}: CSP: {violations}"
    if path == "/redoc":
        offline.watch.csp = [m for m in offline.watch.csp if REDOC_LOGO not in m]
    offline.watch.assert_clean()


def test_swagger_ui_tries_an_operation_offline(offline: Offline) -> None:
    """Swagger UI's "Try it out" works within the CSP (connect-src 'self')."""
    page = offline.page
    page.goto("/docs")
    operation = page.locator("#operations-health-health_health_get, .opblock-summary-get").first
    expect(operation).to_be_visible(timeout=RENDER_WAIT_MS)
    page.get_by_text("Liveness: the process answers", exact=True).click()
    page.get_by_role("button", name="Try it out").first.click()
    page.get_by_role("button", name="Execute").first.click()
    expect(page.locator(".live-responses-table tbody .response-col_status").first).to_contain_text(
        "200", timeout=RENDER_WAIT_MS
    )
    assert offline.aborted == [], offline.aborted
    assert page.evaluate("window.__cspViolations") == []
    offline.watch.assert_clean()
