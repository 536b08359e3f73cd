"""The status page's priority filter and column in a real browser (#14): choosing a priority
lists only that priority's jobs, the column says each job's, and the order link keeps it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import Session

pytestmark = pytest.mark.browser

STATUS = "/app/v1/status"
PRIORITIES = ("high", "default", "low")


def row(page: Page, job_id: str) -> Any:
    return page.locator(f'tr[data-job-id="{job_id}"]')


def shown(page: Page) -> list[str]:
    return list(
        page.locator("tr[data-job-id]").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    )


@pytest.fixture
def one_of_each(
    api: httpx.Client,
    auth: dict[str, str],
    run_id: str,
    wait_for_job: Callable[[str], dict[str, Any]],
) -> tuple[str, dict[str, str]]:
    """A finished hello job at each priority under one fresh prefix: (prefix, {priority: id})."""
    prefix = f"{run_id}-prio{uuid.uuid4().hex[:4]}-"
    ids = {p: f"{prefix}{p}" for p in PRIORITIES}
    for priority, job_id in ids.items():
        body = {"job_id": job_id, "function": "hello", "params": {}, "priority": priority}
        assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    for job_id in ids.values():
        assert wait_for_job(job_id)["status"] == "succeeded"
    return prefix, ids


def _choose(page: Page, prefix: str, priority: str) -> None:
    page.get_by_label("Job id", exact=True).fill(prefix)
    page.get_by_label("Priority", exact=True).select_option(priority)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state("domcontentloaded")


def test_priority_filter_shows_only_that_priority(
    session: Session, one_of_each: tuple[str, dict[str, str]]
) -> None:
    page = session.page
    prefix, ids = one_of_each
    page.goto(STATUS)
    expect(page.locator("table.job-table thead th", has_text="Priority")).to_have_count(1)

    _choose(page, prefix, "")  # any priority: all three, each with its own in the column
    expect(page.locator("tr[data-job-id]")).to_have_count(3)
    for priority, job_id in ids.items():
        expect(row(page, job_id).locator("td.priority")).to_have_text(priority)

    for priority in PRIORITIES:
        _choose(page, prefix, priority)
        expect(page).to_have_url(re.compile(rf"priority={priority}"))
        expect(page.get_by_label("Priority", exact=True)).to_have_value(priority)
        expect(page.locator("tr[data-job-id]")).to_have_count(1)
        assert shown(page) == [ids[priority]]
        expect(row(page, ids[priority]).locator("td.priority")).to_have_text(priority)
        expect(page.locator("#jobs-caption")).to_contain_text("Jobs matching the filters")

    # The order link keeps the filter; after a live refresh the list still holds only `low`.
    page.locator("a.sort").click()
    page.wait_for_load_state("domcontentloaded")
    expect(page).to_have_url(re.compile(r"sort=oldest"))
    expect(page).to_have_url(re.compile(r"priority=low"))
    page.wait_for_timeout(2500)
    assert shown(page) == [ids["low"]]
    session.watch.assert_clean()


def test_unknown_priority_is_ignored_with_a_notice(
    session: Session, one_of_each: tuple[str, dict[str, str]]
) -> None:
    page = session.page
    prefix, _ = one_of_each
    page.goto(f"{STATUS}?q={prefix}&priority=urgent")
    expect(page.get_by_role("alert")).to_contain_text("Unknown priority 'urgent' ignored")
    expect(page.locator("tr[data-job-id]")).to_have_count(3)
    expect(page.get_by_label("Priority", exact=True)).to_have_value("")
    session.watch.assert_clean()
