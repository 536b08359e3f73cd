"""The status page's search, filters and order, over HTTP to the running API (`make up`).

Search by exact id and by id prefix, the status filter, and both orders of enqueue time with
their cursor pages: walking every page newest first and oldest first must list each job once,
in order, including jobs that share an enqueue time (a batch is one INSERT: one `now()`).
"""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

STATUS = "/app/v1/status"
PAGE_SIZE = 50  # api/status/reading.py
ROW = re.compile(r'<tr data-job-id="([^"]+)"')
pytestmark = pytest.mark.integration

NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


def ids_on(page: str) -> list[str]:
    return [html.unescape(found) for found in ROW.findall(page)]


def walk(client: httpx.Client, query: str) -> tuple[list[str], int]:
    """Every job id the list shows for `query`, following its "next" links; and the pages."""
    seen: list[str] = []
    url: str | None = STATUS + query
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text[:500]
        assert "not valid any more" not in response.text, url
        seen += ids_on(response.text)
        pages += 1
        found = NEXT.search(response.text)
        url = html.unescape(found[1]) if found else None
        assert pages < 20, "the pager does not end"
    return seen, pages


@pytest.fixture(scope="module")
def ledger_rows(api: httpx.Client, auth: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """130 hello jobs under one fresh prefix: two batches (each sharing one enqueue time) and
    ten single submissions; returns the prefix and the ledger's rows, oldest first."""
    prefix = f"pgsearch-{uuid.uuid4().hex[:8]}-"
    for batch in ("a", "b"):
        jobs = [
            {"job_id": f"{prefix}{batch}{i:03d}", "function": "hello", "params": {}}
            for i in range(60)
        ]
        response = api.post("/api/v1/batches", json={"jobs": jobs}, headers=auth)
        assert response.status_code in (200, 202, 207), response.text[:500]
    for i in range(10):
        body = {"job_id": f"{prefix}c{i:03d}", "function": "hello", "params": {"fail": i < 4}}
        assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    rows: list[dict[str, Any]] = []
    cursor = ""
    while True:  # the JSON API's list, newest first: the truth to compare the page with
        response = api.get(f"/api/v1/jobs?limit=100{cursor}", headers=auth)
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        rows += [r for r in body["jobs"] if r["job_id"].startswith(prefix)]
        if not body.get("next_cursor") or len(rows) == 130:
            break
        cursor = f"&before={body['next_cursor']}"
    assert len(rows) == 130, len(rows)
    rows.reverse()
    return prefix, rows


def test_both_orders_list_every_job_once_across_pages(
    page_api: httpx.Client, ledger_rows: tuple[str, list[dict[str, Any]]]
) -> None:
    prefix, rows = ledger_rows
    oldest_first = [r["job_id"] for r in rows]
    # Ties (a batch's rows) are ordered by job id; the whole order is (enqueued_at, job_id).
    assert oldest_first == [r["job_id"] for r in sorted(rows, key=_order)]
    assert len({r["enqueued_at"] for r in rows}) < len(rows), "the batches share a time"

    newest, pages = walk(page_api, f"?q={prefix}")
    assert pages == 3
    assert newest == oldest_first[::-1]
    oldest, pages = walk(page_api, f"?q={prefix}&sort=oldest")
    assert pages == 3
    assert oldest == oldest_first
    assert len(set(oldest)) == 130


def _order(row: dict[str, Any]) -> tuple[datetime, str]:
    return datetime.fromisoformat(row["enqueued_at"]), row["job_id"]


def test_sort_links_flip_the_order_and_keep_the_filters(
    page_api: httpx.Client, ledger_rows: tuple[str, list[dict[str, Any]]]
) -> None:
    prefix, _ = ledger_rows
    # The four failing jobs (c000-c003) may still be queued or running: wait until all failed,
    # or the two orders would compare lists read at different moments.
    deadline = time.monotonic() + 20
    while len(ids_on(first := page_api.get(f"{STATUS}?q={prefix}c&status=failed").text)) < 4:
        assert time.monotonic() < deadline, ids_on(first)
        time.sleep(0.1)
    flip = re.search(r'<a class="sort" href="([^"]+)"', first)
    assert flip, "the Enqueued column has no order link"
    target = html.unescape(flip[1])
    assert "sort=oldest" in target and "status=failed" in target and f"q={prefix}c" in target
    assert ids_on(page_api.get(target).text) == ids_on(first)[::-1]


def test_exact_id_and_prefix(
    page_api: httpx.Client,
    submit_ids: Callable[[list[str]], None],
) -> None:
    base = f"pgexact-{uuid.uuid4().hex[:8]}"
    ids = [base, f"{base}-1", f"{base}-2", f"{base}_x"]
    submit_ids(ids)
    exact = ids_on(page_api.get(STATUS, params={"q": base, "match": "exact"}).text)
    assert exact == [base]
    prefix = ids_on(page_api.get(STATUS, params={"q": base}).text)
    assert sorted(prefix) == sorted(ids)
    # `_` and `%` are literal in a prefix, not LIKE wildcards.
    assert ids_on(page_api.get(STATUS, params={"q": f"{base}_"}).text) == [f"{base}_x"]
    none = page_api.get(STATUS, params={"q": f"{base}-", "match": "exact"})
    assert ids_on(none.text) == [] and "No jobs match these filters." in none.text
    # The form keeps what was asked.
    form = page_api.get(STATUS, params={"q": base, "match": "exact"}).text
    assert 'value="exact" selected' in form


def test_status_filter_and_bad_values(
    page_api: httpx.Client,
    ledger_rows: tuple[str, list[dict[str, Any]]],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    prefix, _ = ledger_rows
    for i in range(10):
        wait_for_job(f"{prefix}c{i:03d}")
    failed = ids_on(page_api.get(STATUS, params={"q": f"{prefix}c", "status": "failed"}).text)
    assert sorted(failed) == [f"{prefix}c{i:03d}" for i in range(4)]
    ok = ids_on(page_api.get(STATUS, params={"q": f"{prefix}c", "status": "succeeded"}).text)
    assert sorted(ok) == [f"{prefix}c{i:03d}" for i in range(4, 10)]
    bad = page_api.get(STATUS, params={"q": prefix, "status": "nope", "sort": "sideways"})
    assert bad.status_code == 200
    assert "Unknown status &#39;nope&#39; ignored" in bad.text
    assert "Unknown order &#39;sideways&#39; ignored" in bad.text
    assert len(ids_on(bad.text)) == PAGE_SIZE


@pytest.fixture
def submit_ids(api: httpx.Client, auth: dict[str, str]) -> Callable[[list[str]], None]:
    def submit(ids: list[str]) -> None:
        for job_id in ids:
            body = {"job_id": job_id, "function": "hello", "params": {}}
            response = api.post("/api/v1/jobs", json=body, headers=auth)
            assert response.status_code == 202, response.text[:300]

    return submit
