"""Retry policies (jobs/base.py RetryPolicy): the back-off's growth, cap and jitter bounds,
which exceptions are retried, and the wrapper's rule with WORKER_MAX_TRIES."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from {{ cookiecutter.app_code }}.jobs import JOBS
from {{ cookiecutter.app_code }}.jobs.base import RetryPolicy
from {{ cookiecutter.app_code }}.jobs.hello import RETRY, HelloFailed, HelloNotYet, HelloParams
from {{ cookiecutter.app_code }}.ledger.tracking import _retry_delay


def test_delay_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=10, backoff_s=0.5, cap_s=3.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize("retry", [1, 2, 3, 8, 30])
def test_jitter_stays_between_its_bounds_and_under_the_cap(retry: int) -> None:
    policy = RetryPolicy(retries=30, backoff_s=1.0, cap_s=20.0, jitter=0.3)
    capped = min(20.0, 2.0 ** (retry - 1))
    assert policy.delay(retry, rand=lambda: 0.0) == capped
    assert policy.delay(retry, rand=lambda: 1.0) == pytest.approx(capped * 0.7)
    assert policy.shortest(retry) == pytest.approx(capped * 0.7)
    rng = random.Random(14)
    seen = [policy.delay(retry, rand=rng.random) for _ in range(2000)]
    assert all(capped * 0.7 <= s <= capped <= 20.0 for s in seen)
    # Spread over the band, not one value (the point of jitter).
    assert max(seen) - min(seen) > 0.25 * capped


@pytest.mark.parametrize(
    "bad",
    [{"retries": -1}, {"backoff_s": -0.1}, {"cap_s": -1}, {"jitter": 1.5}, {"jitter": -0.1}],
)
def test_a_bad_policy_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"negative|jitter"):
        RetryPolicy(**bad)


def test_never_types_and_no_retries_are_not_retried() -> None:
    assert RETRY.retries_on(HelloNotYet("x"))
    assert not RETRY.retries_on(HelloFailed("x"))
    assert not RetryPolicy().retries_on(RuntimeError("x"))
    assert JOBS["hello"].retry is RETRY and RETRY.retries == 3
    assert JOBS["cleanup"].retry.retries == 0


class FakeSettings:
    def __init__(self, max_tries: int) -> None:
        self.worker_max_tries = max_tries


def ctx(job_try: int, max_tries: int = 5) -> dict[str, Any]:
    return {"job_try": job_try, "settings": FakeSettings(max_tries)}


@pytest.mark.parametrize(
    ("job_try", "max_tries", "retried"),
    [(1, 5, True), (3, 5, True), (4, 5, False), (2, 3, True), (3, 3, False), (1, 1, False)],
)
def test_retries_stop_at_the_policy_or_worker_max_tries(
    job_try: int, max_tries: int, retried: bool
) -> None:
    delay = _retry_delay(ctx(job_try, max_tries), JOBS["hello"], HelloNotYet("x"))
    assert (delay is not None) is retried
    if delay is not None:
        assert RETRY.shortest(job_try) <= delay <= RETRY.shortest(job_try) / (1 - RETRY.jitter)


def test_invalid_params_and_never_types_fail_at_once() -> None:
    with pytest.raises(ValidationError) as invalid:
        HelloParams.model_validate({"fail_until_try": -1})
    assert _retry_delay(ctx(1), JOBS["hello"], invalid.value) is None
    assert _retry_delay(ctx(1), JOBS["hello"], HelloFailed("x")) is None
