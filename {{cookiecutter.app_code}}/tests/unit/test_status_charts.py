"""The status page's charts without a server: wait buckets and percentiles (minutes.py), the
charts' geometry (charts.py), and the SVG the template writes from it (well-formed, no inline
style, titles on every bar and point)."""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import jinja2
import pytest

from {{ cookiecutter.app_code }}.api.status.charts import charts, finished_chart, nice_ceiling, wait_chart
from {{ cookiecutter.app_code }}.api.status.formatting import TEMPLATE_DIR
from {{ cookiecutter.app_code }}.api.status.minutes import (
    ERROR_FACTOR,
    LAST_BUCKET,
    NEVER_STARTED,
    WINDOW_MINUTES,
    bucket_bounds,
    bucket_of,
    build_window,
    quantile,
    window_start,
)
from {{ cookiecutter.app_code }}.jobs import FINISHED, STATUSES

NOW = datetime(2026, 1, 2, 10, 30, 42, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
TICKS = [("09", 4), ("09", 5), ("10", 0), ("10", 1), ("10", 2), ("10", 3)]


def row(minutes_ago: int, outcome: str, wait_s: float | None, n: int = 1) -> dict[str, object]:
    minute = NOW.replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    return {"minute": minute, "outcome": outcome, "wait_bucket": bucket_of(wait_s), "n": n}


def test_buckets_hold_their_waits_and_are_log_spaced() -> None:
    assert bucket_of(None) == NEVER_STARTED
    assert bucket_of(0.0) == bucket_of(-1.0) == bucket_of(0.0009) == 0
    assert bucket_of(0.001) == 1 and bucket_of(0.0016) == 2
    assert bucket_of(1e9) == LAST_BUCKET
    for wait in (0.0004, 0.0013, 0.02, 0.7, 3.0, 59.0, 4000.0, 99_000.0, 1e6):
        low, high = bucket_bounds(bucket_of(wait))
        assert low <= wait < high, (wait, low, high)
    for bucket in range(2, LAST_BUCKET):
        low, high = bucket_bounds(bucket)
        assert high / low == pytest.approx(ERROR_FACTOR)


def test_quantiles_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(15)
    waits = sorted(rng.lognormvariate(math.log(0.05), 1.5) for _ in range(2000))
    counts: dict[int, int] = {}
    for wait in waits:
        counts[bucket_of(wait)] = counts.get(bucket_of(wait), 0) + 1
    counts[NEVER_STARTED] = 500  # jobs that never started are not waits
    for q in (0.5, 0.95):
        exact = waits[int(q * len(waits)) - 1]
        got = quantile(counts, q)
        assert got is not None
        assert exact / ERROR_FACTOR <= got <= exact * ERROR_FACTOR, (q, exact, got)
    assert quantile({}, 0.5) is None and quantile({NEVER_STARTED: 3}, 0.5) is None
    assert quantile({LAST_BUCKET: 2}, 0.95) == bucket_bounds(LAST_BUCKET)[0]


def test_the_window_is_the_last_hour_by_minute_with_every_finished_status() -> None:
    assert set(FINISHED) < set(STATUSES) and "queued" not in FINISHED
    rows = [
        row(0, "succeeded", 0.01, 3),
        row(0, "failed", 0.2),
        row(59, "succeeded", 1.0),
        row(60, "succeeded", 1.0, 100),  # one minute too old: not shown
        row(5, "gone_missing", None, 2),  # a status this code does not know: shown after
    ]
    window = build_window(rows, NOW)
    assert len(window.minutes) == WINDOW_MINUTES
    assert window.minutes[0].start == window_start(NOW) == datetime(2026, 1, 2, 9, 31, tzinfo=UTC)
    assert window.outcomes == (*FINISHED, "gone_missing")
    zero = dict.fromkeys(window.outcomes, 0)
    assert window.minutes[-1].finished == {**zero, "succeeded": 3, "failed": 1}
    assert window.minutes[0].total == 1
    assert sum(m.total for m in window.minutes) == 7
    assert window.minutes[-6].waited == 0 and window.minutes[-6].p50 is None


def test_bars_stack_per_minute_with_their_counts_in_the_titles() -> None:
    window = build_window([row(0, "succeeded", 0.01, 6), row(0, "failed", 0.5, 2)], NOW)
    chart = finished_chart(window)
    ok, bad = chart.bars
    assert (ok.outcome, ok.n, bad.outcome, bad.n) == ("succeeded", 6, "failed", 2)
    assert ok.minute == bad.minute == "2026-01-02T10:30Z"
    assert "10:30 UTC: 6 succeeded" in ok.title and "2 failed" in bad.title
    assert bad.y + bad.height == pytest.approx(ok.y)  # stacked: failed on top of succeeded
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "6", "8", "10"]
    assert [t.label for t in chart.x_ticks] == [f"{h}:{m}0" for h, m in TICKS]
    assert "8 jobs finished in the last hour: 6 succeeded, 2 failed" in chart.description
    assert chart.empty is None
    assert finished_chart(build_window([], NOW)).empty


def test_wait_lines_break_at_minutes_without_jobs_on_a_log_scale() -> None:
    rows = [row(2, "succeeded", 0.01), row(1, "succeeded", 0.02), row(0, "succeeded", 30.0)]
    rows.append(row(10, "succeeded", 0.005))
    chart = wait_chart(build_window(rows, NOW))
    p50 = next(line for line in chart.lines if line.series == "p50")
    assert len(p50.segments) == 2  # minute -10 alone, then -2..0
    assert [t.label for t in chart.y_ticks] == ["1 ms", "10 ms", "100 ms", "1 s", "10 s", "100 s"]
    ys = [p.y for p in chart.points if p.series == "p50"]
    assert ys == sorted(ys, reverse=True)  # longer waits are higher up
    assert all("queue wait" in p.title for p in chart.points)
    assert wait_chart(build_window([], NOW)).empty


@pytest.mark.parametrize("value, top", [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (480, 500)])
def test_count_axis_tops(value: float, top: float) -> None:
    assert nice_ceiling(value) == top


def test_the_template_writes_well_formed_svg_without_inline_style() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True)
    macro = env.get_template("_charts.html").module.chart  # type: ignore[attr-defined]
    hostile = build_window([row(0, "<script>", 0.1), row(0, "succeeded", 0.3)], NOW, "x&y")
    for chart in charts(hostile):
        html = str(macro(chart))
        assert "style=" not in html and "<script" not in html
        figure = ET.fromstring(html)  # noqa: S314 (our own render, not untrusted input)
        svg = figure.find(f"{SVG}svg")
        assert svg is not None and svg.get("role") == "img"
        labelled = (svg.get("aria-labelledby") or "").split()
        assert labelled == [f"{chart.id}-title", f"{chart.id}-desc"]
        marks = svg.findall(f".//{SVG}rect[@data-n]") + svg.findall(f".//{SVG}circle")
        assert marks and all(m.find(f"{SVG}title") is not None for m in marks)
