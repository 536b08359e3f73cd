"""Fixtures for the browser tests: the running API (`make up`), the machine's Chromium or Chrome, a
watched page logged in to the status page with API_READ_TOKEN (through the login form, as a
person does).

Playwright drives the browser browser_path.find_browser finds (CHROMIUM or CHROME, then
chromium, chromium-browser, google-chrome, google-chrome-stable on PATH); it never downloads
one. Without a browser, or without the stack, the tests fail and say what to do; none is
skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from {{ cookiecutter.app_code }}.core.config import Settings

from .browser_path import BrowserNotFound, find_browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 812}


@pytest.fixture(scope="session")
def run_id() -> str:
    """A prefix unique to this test run: every job id starts with it, and the page filters on it."""
    return f"sp-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def submit(api: httpx.Client, settings: Settings, run_id: str) -> Callable[..., str]:
    """Submit `function(**params)` under a fresh id `<run>-<name>-<random>`; returns the id."""
    headers = {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}

    def _submit(name: str, params: dict[str, Any], function: str = "hello") -> str:
        job_id = f"{run_id}-{name}-{uuid.uuid4().hex[:6]}"
        response = api.post(
            "/api/v1/jobs",
            json={"job_id": job_id, "function": function, "params": params},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        return job_id

    return _submit


# Module scope, not session: the sync API keeps an event loop running on the main thread while
# it is open, and the async (anyio) tests of other directories need that thread's loop free.
@pytest.fixture(scope="module")
def pw() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(pw: Playwright) -> Iterator[Browser]:
    try:
        executable = find_browser()
    except BrowserNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class Watch:
    """What a page did that it must not: dialogs (alert), CSP violations, script errors."""

    dialogs: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                self.csp.append(message.text)
            elif message.type == "error":
                self.errors.append(message.text)

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "framenavigated",
            lambda frame: self.navigations.append(frame.url) if frame == page.main_frame else None,
        )

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"the page opened dialogs (script ran): {self.dialogs}"
        assert self.csp == [], f"Content-Security-Policy violations: {self.csp}"
        assert self.errors == [], f"console errors: {self.errors}"


@dataclass
class Session:
    page: Page
    watch: Watch


def log_in(page: Page, token: str, next_path: str = "/app/v1/status") -> None:
    """The login form, filled and sent; the page lands on `next_path` (or the form again)."""
    page.goto(f"/app/v1/login?next={next_path}")
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state("domcontentloaded")


@pytest.fixture
def session(browser: Browser, base_url: str, settings: Settings) -> Iterator[Session]:
    """A desktop-sized page on the API, logged in with the read token, watched for dialogs,
    CSP violations and errors."""
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    log_in(page, settings.api_read_token.get_secret_value())
    try:
        yield Session(page, watch)
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
