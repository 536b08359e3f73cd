"""Shared fixtures: settings from `.env`, the running API, and anyio (shipped with FastAPI)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from {{ cookiecutter.app_code }}.core.config import Settings, SettingsError, load_settings

JOB_WAIT_SECONDS = 20.0


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        pytest.fail(f"{exc}\n(the tests read the same .env as the services)", pytrace=False)


@pytest.fixture(scope="session")
def base_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.api_port}"


@pytest.fixture(scope="session")
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        try:
            client.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            pytest.fail(
                f"the API does not answer at {base_url}/health ({exc}): start the stack with "
                "`make up` (or point API_HOST_PORT at a running one)",
                pytrace=False,
            )
        yield client


@pytest.fixture(scope="session")
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


@pytest.fixture
def job_id() -> Callable[[str], str]:
    """Fresh ids: every submission needs a new one, forever."""
    run = uuid.uuid4().hex[:10]
    return lambda name="t": f"test-{name}-{run}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def wait_for_job(api: httpx.Client) -> Callable[..., dict[str, Any]]:
    def wait(job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed")) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_WAIT_SECONDS
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = api.get(f"/api/v1/jobs/{job_id}")
            if response.status_code == 200:
                record = response.json()
                if record["status"] in statuses:
                    return record
            time.sleep(0.1)
        pytest.fail(
            f"job {job_id} did not reach {statuses} within {JOB_WAIT_SECONDS:.0f} s "
            f"(last seen: {record.get('status', 'not found')}); is the worker running? "
            "(make status, make logs)"
        )

    return wait
