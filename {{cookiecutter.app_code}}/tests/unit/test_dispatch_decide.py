"""The dispatcher's rule, one row at a time: what arq holds decides what happens to the row."""

from __future__ import annotations

import pytest

from {{ cookiecutter.app_code }}.ledger.dispatch import Act, decide
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
