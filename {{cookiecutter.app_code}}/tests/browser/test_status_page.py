"""The status page in a real browser, against the running stack (`make up`).

Jobs are submitted through the API; the page must show them change state without a reload,
filter through its plain GET form, show one job in full, print hostile params as text, fit a
375 px screen, and send its security headers. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import DESKTOP, PHONE, Session, Watch, log_in

pytestmark = pytest.mark.browser

STATUS = "/app/v1/status"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
LIVE_WAIT_MS = 15_000  # a job of 1.5-2.5 s, plus a 2 s refresh period, plus slack
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '"><svg onload=alert(3)>',
]


def row(page: Page, job_id: str) -> Any:
    return page.locator(f'tr[data-job-id="{job_id}"]')


def no_horizontal_scroll(page: Page) -> tuple[int, int]:
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return int(width), int(inner)


# --- plain HTTP: headers, redirect, markup rules ------------------------------------------------


def test_headers_redirect_and_no_inline_code(
    api: httpx.Client, page_api: httpx.Client, run_id: str
) -> None:
    redirect = api.get("/app", follow_redirects=False)
    assert redirect.status_code in (302, 307), redirect.status_code
    assert redirect.headers["location"].endswith(STATUS)

    paths = (STATUS, f"{STATUS}/fragment", f"/app/v1/jobs/{run_id}-missing", "/app/v1/login")
    for path in paths:
        response = page_api.get(path) if "login" not in path else api.get(path)
        assert response.status_code == (404 if "missing" in path else 200), path
        assert response.headers["content-type"].startswith("text/html"), path
        for name, value in HEADERS.items():
            assert response.headers.get(name) == value, f"{path}: {name}"
        html = response.text
        # CSP allows no inline code; the page must not need any.
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"{path}: inline <script>"
        assert not re.search(r"\sstyle\s*=", html), f"{path}: inline style attribute"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{path}: inline event handler"
        assert "https://" not in html and "//cdn" not in html, f"{path}: external resource"

    css = api.get("/static/status.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = api.get("/static/status.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]


# --- live updates -------------------------------------------------------------------------------


def test_row_turns_succeeded_without_reload(
    session: Session, submit: Callable[..., str], run_id: str
) -> None:
    page, watch = session.page, session.watch
    first = submit("live-a", {"sleep_ms": 2500})
    response = page.goto(f"{STATUS}?q={run_id}-live-")
    assert response is not None and response.status == 200
    assert response.headers.get("content-security-policy") == CSP

    # First paint comes from the server: the job is there, not finished yet.
    expect(row(page, first)).to_be_visible()
    assert row(page, first).get_attribute("data-status") in ("queued", "in_progress")
    page.evaluate("window.__marker = 1")
    navigations = len(watch.navigations)

    # A job submitted after the page loaded appears through the live refresh.
    second = submit("live-b", {"sleep_ms": 1500})
    expect(row(page, second)).to_be_visible(timeout=LIVE_WAIT_MS)
    for job_id in (first, second):
        expect(row(page, job_id)).to_have_attribute(
            "data-status", "succeeded", timeout=LIVE_WAIT_MS
        )
        expect(row(page, job_id).locator("td.status")).to_have_text("succeeded")

    assert page.evaluate("window.__marker") == 1, "the page reloaded"
    assert len(watch.navigations) == navigations, f"the page navigated: {watch.navigations}"
    expect(page.locator("#live-state")).to_contain_text("updated")
    watch.assert_clean()


def test_live_updates_pause_while_hidden(session: Session) -> None:
    page = session.page
    page.goto(STATUS)
    expect(page.locator("#live-toggle")).to_be_visible()
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {value: true, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    expect(page.locator("#live-state")).to_contain_text("Paused while the tab is hidden")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "fragment" in r.url else None)
    page.wait_for_timeout(4500)  # two refresh periods
    assert requests == [], "the page polled while hidden"
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {value: false, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    expect(page.locator("#live-state")).to_contain_text("updated", timeout=5_000)
    assert requests, "the page did not resume polling"

    page.locator("#live-toggle").click()
    expect(page.locator("#live-toggle")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#live-state")).to_contain_text("paused")
    session.watch.assert_clean()


# --- filters ------------------------------------------------------------------------------------


@pytest.fixture
def finished_pair(
    submit: Callable[..., str], wait_for_job: Callable[[str], dict[str, Any]], run_id: str
) -> tuple[str, str, str]:
    """A succeeded and a failed hello job of this test, and the id prefix they alone share."""
    tag = f"filter{uuid.uuid4().hex[:4]}"
    ok = submit(f"{tag}-ok", {"name": "Ada"})
    bad = submit(f"{tag}-bad", {"fail": True})
    assert wait_for_job(ok)["status"] == "succeeded"
    assert wait_for_job(bad)["status"] == "failed"
    return ok, bad, f"{run_id}-{tag}-"


def _filter(page: Page, *, prefix: str, status: str = "", function: str = "") -> None:
    page.get_by_label("Job id", exact=True).fill(prefix)
    page.get_by_label("Status", exact=True).select_option(status)
    page.get_by_label("Function", exact=True).select_option(function)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state("domcontentloaded")


def test_filter_by_status_and_function_with_the_form(
    session: Session, finished_pair: tuple[str, str, str]
) -> None:
    page = session.page
    ok, bad, prefix = finished_pair
    page.goto(STATUS)

    _filter(page, prefix=prefix, status="failed")
    expect(page).to_have_url(re.compile(r"status=failed"))
    expect(row(page, bad)).to_be_visible()
    expect(row(page, ok)).to_have_count(0)
    expect(page.get_by_label("Status", exact=True)).to_have_value("failed")

    _filter(page, prefix=prefix, status="succeeded", function="hello")
    expect(row(page, ok)).to_be_visible()
    expect(row(page, bad)).to_have_count(0)

    _filter(page, prefix=prefix, function="cleanup")
    expect(page.locator("tr[data-job-id]")).to_have_count(0)
    expect(page.locator("#jobs td.empty")).to_have_text("No jobs match these filters.")

    _filter(page, prefix=prefix, function="hello")
    expect(page.locator("tr[data-job-id]")).to_have_count(2)
    # Newest first.
    ids = page.locator("tr[data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert ids == [bad, ok]
    session.watch.assert_clean()


def test_filters_work_without_javascript(
    browser: Browser, base_url: str, settings: Settings, finished_pair: tuple[str, str, str]
) -> None:
    context = browser.new_context(base_url=base_url, java_script_enabled=False, viewport=DESKTOP)
    try:
        page = context.new_page()
        log_in(page, settings.api_read_token.get_secret_value())  # a plain form: no script
        page.goto(STATUS)
        expect(page.locator("#live-toggle")).to_be_hidden()
        _filter(page, prefix=finished_pair[2], status="failed")
        expect(row(page, finished_pair[1])).to_be_visible()
        expect(page.locator("tr[data-job-id]")).to_have_count(1)
    finally:
        context.close()


# --- the job page -------------------------------------------------------------------------------


def test_job_page_shows_everything(
    session: Session,
    submit: Callable[..., str],
    wait_for_job: Callable[[str], dict[str, Any]],
    run_id: str,
) -> None:
    page = session.page
    job_id = submit("detail", {"name": "Ada", "sleep_ms": 300})
    wait_for_job(job_id)
    page.goto(f"{STATUS}?q={job_id}")
    row(page, job_id).get_by_role("link", name=job_id).click()
    expect(page).to_have_url(re.compile(rf"/app/v1/jobs/{re.escape(job_id)}$"))
    expect(page.locator("h1")).to_contain_text(job_id)

    job = page.locator("#job")
    expect(job.locator("dd.status")).to_have_text("succeeded")
    params = job.locator('pre[data-field="params"]')
    expect(params).to_contain_text('"name": "Ada"')
    expect(params).to_contain_text('"sleep_ms": 300')
    expect(job.locator('pre[data-field="result"]')).to_contain_text("hello Ada: complete")
    expect(job.locator('[data-field="error"]')).to_have_text("None.")
    for label in ("Enqueued", "Started", "Finished"):
        expect(job.locator("dt", has_text=label).locator("xpath=../dd/time")).to_have_attribute(
            "datetime", re.compile(r"^\d{4}-\d\d-\d\dT")
        )
    duration = re.compile(r"^\d+ ms$|^\d+\.\d\d s$")
    expect(job.locator('[data-field="wait"]')).to_have_text(duration)
    expect(job.locator('[data-field="run"]')).to_have_text(duration)
    run_text = job.locator('[data-field="run"]').inner_text()
    assert run_text.endswith(" s") or int(run_text.split()[0]) >= 300, run_text
    session.watch.assert_clean()


def test_failed_job_page_shows_the_traceback(
    session: Session, submit: Callable[..., str], wait_for_job: Callable[[str], dict[str, Any]]
) -> None:
    page = session.page
    job_id = submit("traceback", {"fail": True})
    wait_for_job(job_id)
    response = page.goto(f"/app/v1/jobs/{job_id}")
    assert response is not None and response.status == 200
    expect(page.locator("#job dd.status")).to_have_text("failed")
    error = page.locator('pre[data-field="error"]')
    expect(error).to_contain_text("Traceback (most recent call last)")
    expect(error).to_contain_text("HelloFailed")
    session.watch.assert_clean()

    # (Chromium logs the 404 of the page itself as a console error: not watched from here.)
    missing = page.goto(f"/app/v1/jobs/{job_id}-nope")
    assert missing is not None and missing.status == 404
    expect(page.locator("main")).to_contain_text("No job with this id")


def test_hostile_params_are_shown_as_text(
    session: Session, submit: Callable[..., str], run_id: str
) -> None:
    """Params and results holding markup are printed, never run: first paint and live swaps."""
    page, watch = session.page, session.watch
    ids = [submit(f"xss{i}", {"name": name, "sleep_ms": 2000}) for i, name in enumerate(HOSTILE)]

    # The list, while the jobs run and after (rows are swapped in live).
    page.goto(f"{STATUS}?q={run_id}-xss")
    for job_id in ids:
        expect(row(page, job_id)).to_have_attribute(
            "data-status", "succeeded", timeout=LIVE_WAIT_MS
        )

    # Each job page: loaded before the result exists, so the result arrives by a live swap.
    more = [
        submit(f"xss-live{i}", {"name": name, "sleep_ms": 2500}) for i, name in enumerate(HOSTILE)
    ]
    for job_id, name in zip(more, HOSTILE, strict=True):
        page.goto(f"/app/v1/jobs/{job_id}")
        expect(page.locator('pre[data-field="params"]')).to_contain_text(name)
        expect(page.locator("#job dd.status")).to_have_text("succeeded", timeout=LIVE_WAIT_MS)
        # JSON escapes the quote of the third name: compare with the JSON text.
        message = json.dumps(f"hello {name}: complete")[1:-1]
        expect(page.locator('pre[data-field="result"]')).to_contain_text(message)
        expect(page.get_by_text(name).first).to_be_visible()
        assert page.locator("img[src='x']").count() == 0
        assert page.locator("main svg, main script").count() == 0
        assert page.locator("script").count() == 1  # status.js, from /static

    page.wait_for_timeout(500)  # let any handler that slipped through fire
    watch.assert_clean()


# --- status sections ----------------------------------------------------------------------------


def test_health_workers_and_cron(session: Session, settings: Settings) -> None:
    page = session.page
    page.goto(STATUS)
    health = page.locator("#health")
    expect(health).to_contain_text("PostgreSQL: ok")
    expect(health).to_contain_text("Redis: ok")
    expect(
        page.locator("#workers tr[data-worker-id] .badge", has_text="online").first
    ).to_be_visible()

    for name, expr in (("hello", settings.hello_cron), ("cleanup", settings.cleanup_cron)):
        cron = page.locator(f'#cron tr[data-cron="{name}"]')
        expect(cron.locator("code")).to_have_text(expr)
        expect(cron.locator("td").nth(1).locator("time")).to_have_attribute(
            "datetime", re.compile(r"^\d{4}-")
        )
    # hello runs at worker start-up, so it has a last run; its id must be cron:hello:<ms>.
    last = page.locator('#cron tr[data-cron="hello"] td').nth(2).locator("a")
    try:
        expect(last).to_have_attribute("href", re.compile(r"/app/v1/jobs/cron%3Ahello%3A\d+$"))
    except AssertionError:
        pytest.fail(
            "the status page shows no last run of the hello cron: no ledger row has an id "
            "'cron:hello:<ms>'. arq names cron runs '<cron name>:<ms>', so the worker must "
            "register its cron jobs as name='cron:hello' (jobs/base.py: Cron.arq_name)",
            pytrace=False,
        )
    session.watch.assert_clean()


# --- layout and screenshots ---------------------------------------------------------------------


def _phone_page(browser: Browser, base_url: str, token: str) -> tuple[Page, Watch]:
    context = browser.new_context(
        base_url=base_url, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    log_in(page, token)
    return page, watch


def test_fits_375px_and_screenshots(
    browser: Browser,
    base_url: str,
    settings: Settings,
    session: Session,
    submit: Callable[..., str],
    wait_for_job: Callable[[str], dict[str, Any]],
    artifacts: Path,
) -> None:
    long_name = "x" * 100  # no spaces: must wrap, not widen the page
    job_id = submit("narrow", {"name": long_name})
    wait_for_job(job_id)

    session.page.goto(STATUS)
    expect(session.page.locator("#live-state")).to_contain_text("updated")
    session.page.screenshot(path=str(artifacts / "status-desktop.png"), full_page=True)
    session.page.goto(f"/app/v1/jobs/{job_id}")
    session.page.screenshot(path=str(artifacts / "job-desktop.png"), full_page=True)

    page, watch = _phone_page(browser, base_url, settings.api_read_token.get_secret_value())
    try:
        for path, shot in ((STATUS, "status-375.png"), (f"/app/v1/jobs/{job_id}", "job-375.png")):
            page.goto(path)
            page.wait_for_timeout(2500)  # one live refresh: swapped content must fit too
            width, inner = no_horizontal_scroll(page)
            assert width <= inner, f"{path}: the page scrolls sideways ({width} > {inner} px)"
            page.screenshot(path=str(artifacts / shot), full_page=True)
        watch.assert_clean()
    finally:
        page.context.close()
    session.watch.assert_clean()
