"""The status page's login in a real browser: the read-only session, the cookie's flags, logout,
the live refresh sending an ended session to the login page, and the failed-login throttle."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import DESKTOP, Watch, log_in

pytestmark = pytest.mark.browser

STATUS = "/app/v1/status"
LOGIN_URL = re.compile(r"/app/v1/login\?next=")


FreshPage = Callable[..., tuple[Page, Watch]]


@pytest.fixture
def fresh_page(browser: Browser, base_url: str) -> Iterator[FreshPage]:
    """A page in a browser context of its own (no cookies yet), with `headers` on every
    request; closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**headers: str) -> tuple[Page, Watch]:
        context = browser.new_context(
            base_url=base_url, viewport=DESKTOP, extra_http_headers=headers
        )
        contexts.append(context)
        context.set_default_timeout(10_000)
        page = context.new_page()
        watch = Watch()
        watch.attach(page)
        return page, watch

    yield make
    for context in contexts:
        context.close()


def _cookie(page: Page, settings: Settings) -> dict[str, object]:
    name = f"{settings.app_code}_session"
    found = [c for c in page.context.cookies() if c["name"] == name]
    assert len(found) == 1, page.context.cookies()
    return dict(found[0])


def test_read_only_login_shows_jobs_and_no_actions_then_logs_out(
    fresh_page: FreshPage,
    settings: Settings,
    submit: Callable[..., str],
    wait_for_job: Callable[..., object],
) -> None:
    job_id = submit("login", {"name": "Ada"})
    wait_for_job(job_id)
    page, watch = fresh_page()
    # The page sends a visitor without a session to the login, and back after it.
    page.goto(f"{STATUS}?q={job_id}")
    expect(page).to_have_url(LOGIN_URL)
    expect(page.locator("h1")).to_have_text("Log in")
    page.get_by_label("Token", exact=True).fill(settings.api_read_token.get_secret_value())
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(rf"{STATUS}\?q={re.escape(job_id)}$"))

    expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_be_visible()
    expect(page.locator("#account")).to_have_attribute("data-role", "read")
    expect(page.locator("#account")).to_contain_text("read-only")
    # No action buttons: the filter, the live toggle, and logging out are all there is.
    names = page.get_by_role("button").evaluate_all("bs => bs.map(b => b.textContent.trim())")
    assert sorted(names) == ["Filter", "Log out", "Pause live updates"], names
    assert page.locator('form[method="post"]').count() == 1  # the logout form
    expect(page.locator("#live-state")).to_contain_text("updated", timeout=5_000)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/app/v1/login\?out=1$"))
    expect(page.locator("main")).to_contain_text("You are logged out.")
    page.goto(STATUS)
    expect(page).to_have_url(LOGIN_URL)
    watch.assert_clean()


def test_the_session_cookie_is_httponly_strict_and_not_secure_over_http(
    fresh_page: FreshPage, settings: Settings
) -> None:
    page, _ = fresh_page()
    log_in(page, settings.api_read_token.get_secret_value())
    expect(page).to_have_url(re.compile(rf"{STATUS}$"))
    cookie = _cookie(page, settings)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http here; Secure when served over HTTPS
    assert cookie["path"] == "/app"
    assert page.evaluate("document.cookie") == "", "a script can read the session cookie"


def test_live_refresh_sends_an_ended_session_to_the_login(
    fresh_page: FreshPage, settings: Settings
) -> None:
    page, _ = fresh_page()
    log_in(page, settings.api_read_token.get_secret_value(), f"{STATUS}?status=failed")
    expect(page.locator("#live-state")).to_contain_text("updated", timeout=5_000)
    page.context.clear_cookies()  # the session ends (expiry, a new SESSION_SECRET, ...)
    expect(page).to_have_url(LOGIN_URL, timeout=8_000)
    assert "next=%2Fapp%2Fv1%2Fstatus%3Fstatus%3Dfailed" in page.url


def test_failed_logins_are_throttled(fresh_page: FreshPage, settings: Settings) -> None:
    # An address of its own (uvicorn trusts X-Forwarded-For from 127.0.0.1), so the other
    # tests' logins from 127.0.0.1 are not throttled by this one.
    address = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
    page, watch = fresh_page(**{"X-Forwarded-For": address})
    codes = []
    for attempt in range(6):
        page.goto("/app/v1/login")
        page.get_by_label("Token", exact=True).fill(f"wrong-{attempt}")
        with page.expect_response(
            lambda r: r.url.endswith("/app/v1/login") and r.request.method == "POST"
        ) as answer:
            page.get_by_role("button", name="Log in").click()
        codes.append(answer.value.status)
    assert codes == [401] * 5 + [429], codes
    assert 1 <= int(answer.value.headers["retry-after"]) <= 60
    expect(page.locator("main .alert")).to_contain_text("Too many failed logins")
    # While throttled, even the right token waits.
    page.goto("/app/v1/login")
    page.get_by_label("Token", exact=True).fill(settings.api_read_token.get_secret_value())
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 429
    assert watch.csp == [] and watch.dialogs == []
