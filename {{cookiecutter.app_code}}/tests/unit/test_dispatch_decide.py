"""The dispatcher's rule, one row at a time: what arq holds decides what happens to the row."""

from __future__ import annotations

import pytest

from {{ cookiecutter.app_code }}.ledger.dispatch import (
    SWEEP_EVERY_S,
    SWEEP_PAUSE_FACTOR,
    Act,
    decide,
    pause_after,
)
from {{ cookiecutter.app_code }}.queue import Held, Holding

CASES = [
    ("queued-or-claimed", "api", Holding(Held.QUEUED), Act.NOTHING),
    ("orphan-job-key", "api", Holding(Held.ORPHAN), Act.REQUEUE),
    ("forgotten-api-job", "api", Holding(Held.NOTHING), Act.DELIVER),
    ("forgotten-cron-run", "cron", Holding(Held.NOTHING), Act.FAILED),
    (
        "expired-before-it-ran",
        "api",
        Holding(Held.FINISHED, success=False, outcome="job expired", expired=True),
        Act.FORGET_AND_DELIVER,
    ),
    (
        "arq-gave-up",
        "api",
        Holding(Held.FINISHED, success=False, outcome="max 5 retries exceeded"),
        Act.FAILED,
    ),
    (
        "finished-unrecorded",
        "api",
        Holding(Held.FINISHED, success=True, outcome={}),
        Act.SUCCEEDED,
    ),
]


@pytest.mark.parametrize(
    ("source", "holding", "act"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(source: str, holding: Holding, act: Act) -> None:
    assert decide(source, holding).act is act


def test_a_gave_up_row_says_why() -> None:
    gave_up = Holding(Held.FINISHED, success=False, outcome="max 5 retries exceeded")
    decision = decide("api", gave_up)
    assert decision.detail == "arq gave up on the job: max 5 retries exceeded"


def test_a_finished_row_carries_the_result() -> None:
    assert decide("api", Holding(Held.FINISHED, success=True, outcome={"a": 1})).detail == {"a": 1}


@pytest.mark.parametrize(
    ("took", "pause"),
    [(0.0, SWEEP_EVERY_S), (0.05, SWEEP_EVERY_S), (0.5, 5.0), (1.2, 12.0)],
    ids=["no-sweep", "small-backlog", "large-backlog", "larger-backlog"],
)
def test_pause_after_a_sweep_grows_with_its_cost(took: float, pause: float) -> None:
    """A cheap sweep repeats every SWEEP_EVERY_S; a costly one waits SWEEP_PAUSE_FACTOR times
    its own length, so sweeping a large backlog cannot take most of the worker's CPU."""
    assert SWEEP_PAUSE_FACTOR == 10.0
    assert pause_after(took) == pytest.approx(pause)


RETRIED = "2026-11-28T08:00:00.123456+00:00"  # the row's retry_marker after a retry


@pytest.mark.parametrize(
    ("name", "holding", "marker", "act"),
    [
        ("earlier-run-result", Holding(Held.FINISHED, success=False), RETRIED, "forget"),
        ("earlier-retry", Holding(Held.FINISHED, success=True, retry="x"), RETRIED, "forget"),
        ("retry-run-result", Holding(Held.FINISHED, success=True, retry=RETRIED), RETRIED, "ok"),
        ("never-retried", Holding(Held.FINISHED, success=True), None, "ok"),
        ("retry-still-running", Holding(Held.QUEUED), RETRIED, "nothing"),
    ],
)
def test_a_retried_row_is_not_settled_with_an_earlier_runs_result(
    name: str, holding: Holding, marker: str | None, act: str
) -> None:
    expected = {"forget": Act.FORGET_AND_DELIVER, "ok": Act.SUCCEEDED, "nothing": Act.NOTHING}
    assert decide("api", holding, marker).act is expected[act], name
