"""The status page's charts in a real browser, against the running stack (`make up`).

Jobs run (some fail); the page's SVG charts then show them: the bars of the minutes since
the test began count exactly the failures it caused, and agree with the ledger minute by
minute (the hello cron runs too, every few seconds, so successes are compared with the
ledger rather than with a fixed number); the queue-wait chart has a point for the minute the
jobs finished. A screenshot goes to tests/artifacts/status-charts.png.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import Session

pytestmark = pytest.mark.browser

CHARTS = "/app/v1/status?function=hello"
SUCCEEDING, FAILING = 4, 2
WAIT_S = 20.0  # live refreshes (every 2 s) until the page shows the jobs

# (minute, outcome) -> jobs, from the finished-jobs chart's bars.
Bars = Counter[tuple[str, str]]


def bars(page: Page) -> Bars:
    found = page.eval_on_selector_all(
        "#chart-finished rect.bar",
        "rects => rects.map(r => [r.dataset.minute, r.dataset.outcome, Number(r.dataset.n)])",
    )
    return Counter({(m, o): n for m, o, n in found})


def since(counts: Bars, first: str) -> Counter[str]:
    """Jobs per outcome in the minutes from `first` on (ISO minutes sort as text)."""
    out: Counter[str] = Counter()
    for (minute, outcome), n in counts.items():
        if minute >= first:
            out[outcome] += n
    return out


def ledger_minutes(settings: Settings, first: datetime) -> Bars:
    """The ledger's own count of hello jobs finished per minute and status from `first` on."""
    with psycopg.connect(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=settings.db_app_user,
        password=settings.db_app_pwd.get_secret_value(),
        options=f"-c search_path={settings.db_schema}",
        connect_timeout=3,
    ) as conn:
        rows = conn.execute(
            "SELECT date_trunc('minute', finished_at), status, count(*) FROM job "
            "WHERE function = 'hello' AND finished_at >= %s GROUP BY 1, 2",
            [first],
        ).fetchall()
    return Counter({(m.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ"), s): n for m, s, n in rows})


def test_charts_show_the_jobs_just_run(
    session: Session,
    settings: Settings,
    submit: Callable[..., str],
    wait_for_job: Callable[[str], dict[str, Any]],
    artifacts: Path,
) -> None:
    page = session.page
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    first = start.strftime("%Y-%m-%dT%H:%MZ")
    page.goto(CHARTS)
    expect(page.locator("#chart-finished")).to_have_attribute("role", "img")
    before = since(bars(page), first)

    ids = [submit(f"chart-ok-{i}", {}) for i in range(SUCCEEDING)]
    ids += [submit(f"chart-bad-{i}", {"fail": True}) for i in range(FAILING)]
    for job_id in ids:
        wait_for_job(job_id)

    # The live refresh (no reload) brings the new bars.
    deadline = time.monotonic() + WAIT_S
    after = since(bars(page), first)
    while after["failed"] - before["failed"] < FAILING and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        after = since(bars(page), first)
    assert after["failed"] - before["failed"] == FAILING, (before, after)
    assert after["succeeded"] - before["succeeded"] >= SUCCEEDING, (before, after)

    # Minute by minute, every job the ledger has finished is in the bars (a cron run may finish
    # in between: read both again, a few times at most). The bars count finishes, and a job
    # retried (POST .../retry, earlier tests) finishes once a run while the ledger keeps one
    # row: so at least the ledger's count, and exactly so when nothing in the window was
    # retried (tests/integration/test_job_minutes.py checks the exact count on its own rows).
    for _ in range(5):
        page.reload()
        shown = Counter({k: n for k, n in bars(page).items() if k[0] >= first})
        truth = ledger_minutes(settings, start)
        if all(shown[key] >= n for key, n in truth.items()):
            break
        page.wait_for_timeout(300)
    assert all(shown[key] >= n for key, n in truth.items()), (shown, truth)

    # Each bar's tooltip says its count; the wait chart has a point for the last finish's minute.
    last = max(minute for minute, outcome in shown if outcome == "failed")
    failed_bar = page.locator(f'#chart-finished rect[data-minute="{last}"][data-outcome="failed"]')
    expect(failed_bar.locator("title")).to_contain_text(f"{shown[(last, 'failed')]} failed")
    for series in ("p50", "p95"):
        point = page.locator(f'#chart-wait circle[data-minute="{last}"][data-series="{series}"]')
        expect(point.locator("title")).to_contain_text(f"queue wait {series}")
        assert float(point.get_attribute("data-seconds") or "nan") >= 0
    expect(page.locator("#chart-wait-desc")).to_contain_text("Queue wait")

    page.locator("#charts").screenshot(path=str(artifacts / "status-charts.png"))
    page.screenshot(path=str(artifacts / "status-charts-page.png"), full_page=True)
    session.watch.assert_clean()
