"""The status page's two charts as geometry: what to draw where, with its text.

Pure (no I/O): a `Window` (minutes.py) in, a `Chart` out, which the template
`_charts.html` writes as inline SVG, autoescaped like the rest of the page (nothing here is
markup, nothing is marked safe). No script and no inline style, so the page's
Content-Security-Policy stays as it is: colours come from status.css by class.

- Jobs finished per minute: stacked bars, one segment per outcome, each with a `<title>`
  (the tooltip) and data attributes (minute, outcome, count) a test can read.
- Queue wait p50/p95 per minute: two lines on a log scale (waits span milliseconds to hours),
  a point per minute with jobs, each with a `<title>`.
Each chart is an `img` for assistive technology, named by its title, described by a sentence
that sums it up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .formatting import span
from .minutes import ERROR_FACTOR, Minute, Window

WIDTH, HEIGHT = 720, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 712, 30, 196  # the plot area
TICK_EVERY_MINUTES = 10
BAR_FILL = 0.8  # of a minute's slot


@dataclass(frozen=True)
class Tick:
    at: float  # x for the time axis, y for the value axis
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    outcome: str
    minute: str  # ISO 8601, UTC
    n: int
    title: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    series: str
    minute: str
    seconds: float
    title: str


@dataclass(frozen=True)
class Line:
    series: str  # the CSS class too
    label: str
    segments: tuple[str, ...]  # SVG `points` strings: a line breaks at minutes without jobs


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    legend: tuple[tuple[str, str], ...]  # (CSS class, label)
    bars: tuple[Bar, ...] = ()
    lines: tuple[Line, ...] = ()
    points: tuple[Point, ...] = ()
    empty: str | None = None  # said over the plot when it has nothing
    width: int = WIDTH
    height: int = HEIGHT
    plot: tuple[int, int, int, int] = (LEFT, TOP, RIGHT, BOTTOM)
    notes: tuple[str, ...] = field(default_factory=tuple)


def _slot(index: int, count: int) -> tuple[float, float]:
    """The x of a minute's slot and its width."""
    width = (RIGHT - LEFT) / count
    return LEFT + index * width, width


def _time_ticks(minutes: list[Minute]) -> tuple[Tick, ...]:
    ticks = []
    for i, minute in enumerate(minutes):
        if minute.start.minute % TICK_EVERY_MINUTES == 0:
            x, width = _slot(i, len(minutes))
            ticks.append(Tick(round(x + width / 2, 1), minute.clock))
    return tuple(ticks)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at least `value` (at least 1): the count axis's top."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return 10 * power  # not reached


def _count_ticks(top: float) -> tuple[Tick, ...]:
    """0 to `top` (1, 2 or 5 x 10^k) in whole steps: 4 or 5 of them, or one per job."""
    step = 1.0 if top <= 2 else top / (4 if str(int(top))[0] == "2" else 5)
    values = [step * i for i in range(round(top / step) + 1)]
    return tuple(Tick(_count_y(v, top), f"{v:,.0f}") for v in values)


def _count_y(value: float, top: float) -> float:
    return round(BOTTOM - (BOTTOM - TOP) * value / top, 1)


def _outcome_summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {outcome.replace('_', ' ')}" for outcome, n in counts.items())


def finished_chart(window: Window) -> Chart:
    """Stacked bars: jobs finished per minute, one colour per outcome."""
    minutes = window.minutes
    top = nice_ceiling(max((m.total for m in minutes), default=0))
    bars = []
    for i, minute in enumerate(minutes):
        x, width = _slot(i, len(minutes))
        base = 0
        for outcome, n in minute.finished.items():
            if n == 0:
                continue
            y0, y1 = _count_y(base, top), _count_y(base + n, top)
            label = f"{minute.clock} UTC: {n:,} {outcome.replace('_', ' ')}"
            bars.append(
                Bar(
                    x=round(x + width * (1 - BAR_FILL) / 2, 1),
                    y=y1,
                    width=round(width * BAR_FILL, 1),
                    height=round(y0 - y1, 1),
                    outcome=outcome,
                    minute=minute.iso,
                    n=n,
                    title=f"{label} (of {minute.total:,} finished that minute)",
                )
            )
            base += n
    totals = {o: sum(m.finished.get(o, 0) for m in minutes) for o in window.outcomes}
    busiest = max(minutes, key=lambda m: m.total)
    described = (
        f"{sum(totals.values()):,} jobs finished in the last hour: {_outcome_summary(totals)}."
    )
    if busiest.total:
        described += f" Busiest minute: {busiest.clock} UTC, {busiest.total:,} jobs."
    return Chart(
        id="chart-finished",
        title=f"Jobs finished per minute{_of(window)}, last hour (UTC)",
        description=described,
        x_ticks=_time_ticks(minutes),
        y_ticks=_count_ticks(top),
        legend=tuple((f"o-{o}", o.replace("_", " ")) for o in window.outcomes),
        bars=tuple(bars),
        empty=None if busiest.total else "No job finished in the last hour.",
    )


def _of(window: Window) -> str:
    return f" ({window.function})" if window.function else ""


def _log_range(values: list[float]) -> tuple[float, float]:
    """Whole decades around the values, at least 1 ms to 1 s."""
    low = min([1e-3, *values])
    high = max([1.0, *values])
    return 10.0 ** math.floor(math.log10(low)), 10.0 ** math.ceil(math.log10(high))


def _wait_y(seconds: float, low: float, high: float) -> float:
    seconds = min(max(seconds, low), high)
    share = (math.log10(seconds) - math.log10(low)) / (math.log10(high) - math.log10(low))
    return round(BOTTOM - (BOTTOM - TOP) * share, 1)


def decade_label(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s" if seconds < 1e5 else f"{seconds:.0e} s"


def wait_chart(window: Window) -> Chart:
    """p50 and p95 of the queue wait of the jobs finished each minute, on a log scale."""
    minutes = window.minutes
    stats = [(i, m, m.p50, m.p95) for i, m in enumerate(minutes) if m.waited]
    low, high = _log_range([v for _, _, *pair in stats for v in pair if v is not None])
    decades = round(math.log10(high / low))
    y_ticks = tuple(
        Tick(_wait_y(low * 10**k, low, high), decade_label(low * 10**k)) for k in range(decades + 1)
    )
    lines, points = [], []
    for series, label, pick in (("p50", "p50 (median)", 2), ("p95", "p95", 3)):
        segments: list[list[str]] = []
        last = -2
        for entry in stats:
            i, minute, value = entry[0], entry[1], entry[pick]
            assert isinstance(value, float)
            x, width = _slot(i, len(minutes))
            cx, cy = round(x + width / 2, 1), _wait_y(value, low, high)
            if i != last + 1:
                segments.append([])
            segments[-1].append(f"{cx},{cy}")
            last = i
            title = (
                f"{minute.clock} UTC: queue wait {series} {span(value)} ({minute.waited:,} jobs)"
            )
            points.append(Point(cx, cy, series, minute.iso, value, title))
        lines.append(Line(series, label, tuple(" ".join(s) for s in segments)))
    described = "No job with a queue wait finished in the last hour."
    if stats:
        p50s = sorted(v for _, _, v, _ in stats if v is not None)
        p95s = [v for _, _, _, v in stats if v is not None]
        described = (
            f"Queue wait of the jobs finished each minute, over {len(stats)} minutes with jobs: "
            f"median of the minutes' p50 {span(p50s[len(p50s) // 2])}, highest p95 "
            f"{span(max(p95s))}."
        )
    return Chart(
        id="chart-wait",
        title=f"Queue wait per minute{_of(window)}: p50 and p95, last hour (UTC, log scale)",
        description=described,
        x_ticks=_time_ticks(minutes),
        y_ticks=y_ticks,
        legend=tuple((line.series, line.label) for line in lines),
        lines=tuple(lines),
        points=tuple(points),
        empty=None if stats else "No queue waits to show.",
        notes=(
            f"From per-minute bucket counts: exact to within one bucket (a factor of "
            f"{ERROR_FACTOR:.2f}).",
        ),
    )


def charts(window: Window) -> tuple[Chart, Chart]:
    """Both charts of the status page, for one window."""
    return finished_chart(window), wait_chart(window)
