"""The status page's buttons in Chromium, against the running stack (`make up`).

A full-access session (API_TOKEN) presses Cancel on a running job and Retry on a failed one,
and sees the status change through the page's live refresh, without reloading; Retry all
failed goes through its confirmation page. A read-only session sees no button at all.
Screenshots of the list and the job page with their buttons go to tests/artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import DESKTOP, Session, Watch, log_in

pytestmark = pytest.mark.browser

STATUS = "/app/v1/status"
LIVE_WAIT_MS = 20_000  # the worker noticing the abort, plus a 2 s refresh period, plus slack


@pytest.fixture
def full(browser: Browser, base_url: str, settings: Settings) -> Iterator[Session]:
    """A desktop page logged in with API_TOKEN (full access), watched like `session`."""
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    log_in(page, settings.api_token.get_secret_value())
    try:
        yield Session(page, watch)
    finally:
        context.close()


def row(page: Page, job_id: str) -> Any:
    return page.locator(f'tr[data-job-id="{job_id}"]')


def mark(page: Page) -> None:
    """Set a marker a reload would lose (the status must change without one)."""
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page reloaded"


def test_cancel_a_running_job_from_the_list(
    full: Session, submit: Callable[..., str], artifacts: Path
) -> None:
    page = full.page
    job_id = submit("cancel", {"sleep_ms": 30_000})
    page.goto(f"{STATUS}?q={job_id}")
    expect(row(page, job_id)).to_have_attribute("data-status", "in_progress", timeout=LIVE_WAIT_MS)
    button = row(page, job_id).get_by_role("button", name=f"Cancel {job_id}")
    expect(button).to_be_visible()
    page.screenshot(path=str(artifacts / "controls-list.png"), full_page=True)
    button.click()
    page.wait_for_load_state("domcontentloaded")
    expect(page).to_have_url(re.compile(rf"{STATUS}\?q={re.escape(job_id)}$"))
    mark(page)
    expect(row(page, job_id)).to_have_attribute("data-status", "cancelled", timeout=LIVE_WAIT_MS)
    expect(row(page, job_id).locator("td.status")).to_have_text("cancelled")
    # A cancelled job offers Retry instead.
    expect(row(page, job_id).get_by_role("button", name=f"Retry {job_id}")).to_be_visible()
    assert_not_reloaded(page)
    full.watch.assert_clean()


def test_retry_a_failed_job_from_its_page(
    full: Session,
    submit: Callable[..., str],
    wait_for_job: Callable[[str], dict[str, Any]],
    artifacts: Path,
) -> None:
    page = full.page
    job_id = submit("retry", {"fail": True, "sleep_ms": 2500})
    wait_for_job(job_id)
    page.goto(f"/app/v1/jobs/{job_id}")
    job = page.locator("#job")
    expect(job).to_have_attribute("data-status", "failed")
    expect(page.locator("#attempts li")).to_have_count(1)
    page.get_by_role("button", name=f"Retry {job_id}").click()
    page.wait_for_load_state("domcontentloaded")
    expect(page).to_have_url(re.compile(rf"/app/v1/jobs/{re.escape(job_id)}$"))
    mark(page)
    # It runs again (2.5 s) and fails again: the page follows it live.
    expect(page.locator("#job")).to_have_attribute(
        "data-status", "in_progress", timeout=LIVE_WAIT_MS
    )
    page.screenshot(path=str(artifacts / "controls-job-running.png"), full_page=True)
    expect(page.locator("#job")).to_have_attribute("data-status", "failed", timeout=LIVE_WAIT_MS)
    expect(page.locator("#attempts li")).to_have_count(2)
    expect(page.locator("#job dd.tries")).to_have_text("2")
    expect(page.locator("#job dd.priority")).to_have_text("default")
    expect(page.locator('#job [data-field="run_at"]')).to_have_text("at once")
    page.screenshot(path=str(artifacts / "controls-job.png"), full_page=True)
    assert_not_reloaded(page)
    full.watch.assert_clean()


def test_retry_all_failed_asks_first(
    full: Session,
    submit: Callable[..., str],
    wait_for_job: Callable[[str], dict[str, Any]],
    run_id: str,
    artifacts: Path,
) -> None:
    page = full.page
    ids = [submit("bulk", {"fail": True}) for _ in range(3)]
    for job_id in ids:
        wait_for_job(job_id)
    prefix = f"{run_id}-bulk-"
    page.goto(f"{STATUS}?q={prefix}&status=failed")
    page.get_by_role("link", name=re.compile("Retry all failed")).click()
    expect(page.locator("h1")).to_have_text("Retry all failed jobs?")
    expect(page.locator("#retry-count")).to_have_attribute("data-count", "3")
    page.screenshot(path=str(artifacts / "controls-confirm.png"), full_page=True)
    page.get_by_role("button", name="Retry 3 jobs").click()
    page.wait_for_load_state("domcontentloaded")
    expect(page.locator("p.notice")).to_have_text("3 failed jobs queued again.")
    for job_id in ids:
        assert wait_for_job(job_id)["tries"] == 2, job_id
    full.watch.assert_clean()


def test_a_read_only_session_sees_no_button(
    session: Session, submit: Callable[..., str], wait_for_job: Callable[[str], dict[str, Any]]
) -> None:
    page = session.page
    failed = submit("ro-failed", {"fail": True})
    running = submit("ro-running", {"sleep_ms": 5000})
    wait_for_job(failed)
    page.goto(f"{STATUS}?q={failed}")
    expect(row(page, failed)).to_be_visible()
    for path in (f"{STATUS}?q={failed}", f"/app/v1/jobs/{failed}", f"/app/v1/jobs/{running}"):
        page.goto(path)
        page.wait_for_timeout(2500)  # and after a live refresh
        expect(page.locator("main form[method='post']")).to_have_count(0)
        expect(page.get_by_role("button", name=re.compile(r"^(Cancel|Retry)"))).to_have_count(0)
        expect(page.get_by_text("Retry all failed")).to_have_count(0)
    session.watch.assert_clean()
