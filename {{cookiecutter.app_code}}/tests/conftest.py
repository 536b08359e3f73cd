"""Shared fixtures: settings from `.env`, the running API, its two tokens (`auth` reads and
writes, `read_auth` only reads), a client logged in to the status page, and anyio (shipped
with FastAPI)."""

from __future__ import annotations

import re
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
    """API_TOKEN: reads and writes."""
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


@pytest.fixture(scope="session")
def read_auth(settings: Settings) -> dict[str, str]:
    """API_READ_TOKEN: reads only."""
    return {"Authorization": f"Bearer {settings.api_read_token.get_secret_value()}"}


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = CSRF_FIELD.search(html)
    assert found, "the page has no csrf_token field"
    return found[1]


def log_in(client: httpx.Client, token: str, **headers: str) -> httpx.Response:
    """The status page's login, as a browser does it: the form, then its POST (not followed)."""
    form = client.get("/app/v1/login", headers=headers)
    assert form.status_code == 200, form.text[:300]
    return client.post(
        "/app/v1/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": "/app/v1/status"},
        headers=headers,
    )


@pytest.fixture(scope="session")
def page_api(base_url: str, settings: Settings, api: httpx.Client) -> Iterator[httpx.Client]:
    """A client with a read-only status page session (logged in with API_READ_TOKEN)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        response = log_in(client, settings.api_read_token.get_secret_value())
        assert response.status_code == 303, response.text[:300]
        yield client


@pytest.fixture
def job_id() -> Callable[[str], str]:
    """Fresh ids: every submission needs a new one, forever."""
    run = uuid.uuid4().hex[:10]
    return lambda name="t": f"test-{name}-{run}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def wait_for_job(api: httpx.Client, read_auth: dict[str, str]) -> Callable[..., dict[str, Any]]:
    def wait(job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed")) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_WAIT_SECONDS
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = api.get(f"/api/v1/jobs/{job_id}", headers=read_auth)
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
