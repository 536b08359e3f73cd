"""The bench's `noop` job is not part of the product: the API accepts it and the worker
registers it only with BENCH_JOB on (unset: only with ENV=dev)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from {{ cookiecutter.app_code }}.api.schemas import JobSubmit
from {{ cookiecutter.app_code }}.core import config
from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.jobs import submittable


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """get_settings() reads the environment again (no `.env`) for each test, and after it."""
    monkeypatch.setenv(config.ENV_FILE_VARIABLE, "")
    for name in ("ENV", "BENCH_JOB"):
        monkeypatch.delenv(name, raising=False)
    config.get_settings.cache_clear()
    yield monkeypatch
    config.get_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "bench_job", "enabled"),
    [
        ("dev", None, True),
        ("prod", None, False),
        ("staging", None, False),
        ("test", None, False),
        ("dev", "", True),  # BENCH_JOB= as in .env.example: unset
        ("dev", "false", False),
        ("prod", "true", True),
    ],
)
def test_bench_job_follows_env_unless_set(
    settings_from_env: pytest.MonkeyPatch, env: str, bench_job: str | None, enabled: bool
) -> None:
    settings_from_env.setenv("ENV", env)
    if bench_job is not None:
        settings_from_env.setenv("BENCH_JOB", bench_job)
    assert Settings(_env_file=None).bench_job_enabled is enabled


def test_noop_is_submittable_only_when_enabled() -> None:
    assert "noop" not in submittable()
    assert "noop" in submittable(bench_job=True)
    assert "hello" in submittable() and "cleanup" not in submittable(bench_job=True)


def test_the_api_refuses_noop_when_off_and_says_what_it_knows(
    settings_from_env: pytest.MonkeyPatch,
) -> None:
    settings_from_env.setenv("ENV", "prod")
    with pytest.raises(ValidationError, match=r"unknown function 'noop'; known: hello"):
        JobSubmit.model_validate({"job_id": "a-1", "function": "noop"})
    assert JobSubmit.model_validate({"job_id": "a-1", "function": "hello"}).function == "hello"

    config.get_settings.cache_clear()
    settings_from_env.setenv("BENCH_JOB", "true")
    assert JobSubmit.model_validate({"job_id": "a-1", "function": "noop"}).function == "noop"
