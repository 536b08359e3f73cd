"""The status page's priority filter over HTTP (#14): with every other filter, both orders and
their cursor pages, the list holds only the chosen priority's jobs, each link of the page
keeps the filter, and Retry all failed counts and retries that priority's failed jobs only."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from {{ cookiecutter.app_code }}.core.config import Settings

from ..conftest import csrf_of, log_in
from .test_page_search import STATUS, ids_on, walk

pytestmark = pytest.mark.integration

PRIORITY_CELL = re.compile(r'<td class="priority pr-(\w+)">(\w+)</td>')
SORT = re.compile(r'<a class="sort" href="([^"]+)"')


@pytest.fixture(scope="module")
def mixed(api: httpx.Client, auth: dict[str, str]) -> tuple[str, dict[str, list[str]]]:
    """60 high, 30 default and 12 low hello jobs under one fresh prefix (the high ones more
    than a page); returns the prefix and the ids of each priority, oldest first."""
    prefix = f"pgprio-{uuid.uuid4().hex[:8]}-"
    counts = {"high": 60, "default": 30, "low": 12}
    ids = {p: [f"{prefix}{p}{i:03d}" for i in range(n)] for p, n in counts.items()}
    jobs = [
        {"job_id": job_id, "function": "hello", "params": {}, "priority": p}
        for p, some in ids.items()
        for job_id in some
    ]
    response = api.post("/api/v1/batches", json={"jobs": jobs}, headers=auth)
    assert response.status_code in (200, 202, 207), response.text[:500]
    return prefix, ids


@pytest.mark.parametrize("sort", ["", "&sort=oldest"])
def test_each_priority_lists_its_jobs_across_pages(
    page_api: httpx.Client, mixed: tuple[str, dict[str, list[str]]], sort: str
) -> None:
    prefix, ids = mixed
    for priority, expected in ids.items():
        seen, pages = walk(page_api, f"?q={prefix}&priority={priority}{sort}")
        assert sorted(seen) == sorted(expected), priority
        assert pages == (2 if len(expected) > 50 else 1)
    everything, _ = walk(page_api, f"?q={prefix}{sort}")
    assert sorted(everything) == sorted(j for some in ids.values() for j in some)


def test_the_column_and_every_link_keep_the_priority(
    page_api: httpx.Client, mixed: tuple[str, dict[str, list[str]]]
) -> None:
    prefix, ids = mixed
    page = page_api.get(f"{STATUS}?q={prefix}&priority=high&function=hello").text
    cells = PRIORITY_CELL.findall(page)
    assert len(cells) == 50 and all(c == ("high", "high") for c in cells), cells[:3]
    assert '<option value="high" selected>' in page
    nxt = html.unescape(re.findall(r'<a rel="next" href="([^"]+)"', page)[0])
    flip = html.unescape(SORT.findall(page)[0])
    fragment = html.unescape(re.findall(r'data-fragment="([^"]+)"', page)[0])
    for link in (nxt, flip, fragment):
        assert "priority=high" in link and "function=hello" in link, link
    assert set(ids_on(page_api.get(nxt).text)) <= set(ids["high"])
    assert set(ids_on(page_api.get(fragment).text)) <= set(ids["high"])
    # The whole page, with the column, for every priority of the ledger.
    anything = page_api.get(f"{STATUS}?q={prefix}&priority=low").text
    assert {c[1] for c in PRIORITY_CELL.findall(anything)} == {"low"}


@pytest.fixture
def full_session(base_url: str, settings: Settings) -> Iterator[httpx.Client]:
    """A client with a full-access status page session (API_TOKEN)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        response = log_in(client, settings.api_token.get_secret_value())
        assert response.status_code == 303, response.text[:300]
        yield client


def test_retry_all_failed_takes_the_priority_filter(
    api: httpx.Client,
    auth: dict[str, str],
    full_session: httpx.Client,
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    prefix = f"pgprio-fail-{uuid.uuid4().hex[:8]}-"
    failing = {
        "high": [f"{prefix}h{i}" for i in range(3)],
        "low": [f"{prefix}l{i}" for i in range(2)],
    }
    for priority, some in failing.items():
        for job_id in some:
            body = {"job_id": job_id, "function": "hello", "params": {"fail": True}}
            body["priority"] = priority
            assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    for job_id in failing["high"] + failing["low"]:
        assert wait_for_job(job_id)["status"] == "failed"
    list_page = full_session.get(f"{STATUS}?q={prefix}&priority=high").text
    link = html.unescape(re.findall(r'href="([^"]*/retry-failed[^"]*)"', list_page)[0])
    assert "priority=high" in link, link
    confirm = full_session.get(link)
    assert confirm.status_code == 200, confirm.text[:300]
    assert 'data-count="3"' in confirm.text, confirm.text[:2000]
    assert '<input type="hidden" name="priority" value="high">' in confirm.text
    form = {"csrf_token": csrf_of(confirm.text), "q": prefix, "match": "prefix"}
    form.update(priority="high", expected="3")
    done = full_session.post(f"{STATUS}/retry-failed", data=form)
    assert done.status_code == 303, done.text[:300]
    assert "retried=3" in done.headers["location"]
    assert "priority=high" in done.headers["location"]
    for job_id in failing["high"]:
        deadline = time.monotonic() + 20
        while (record := api.get(f"/api/v1/jobs/{job_id}", headers=auth).json())["tries"] < 2:
            assert time.monotonic() < deadline, record
            time.sleep(0.1)
        assert record["priority"] == "high", record
    for job_id in failing["low"]:
        record = api.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
        assert record["tries"] == 1 and record["status"] == "failed", record
