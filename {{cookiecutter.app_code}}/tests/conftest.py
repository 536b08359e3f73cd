"""Shared fixtures: settings from `.env`, the running API, and anyio (shipped with FastAPI)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from {{ cookiecutter.app_code }}.core.config import Settings, SettingsError, load_settings


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
