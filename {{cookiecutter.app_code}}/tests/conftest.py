"""Shared fixtures: settings from `.env`, and anyio (shipped with FastAPI) for async tests."""

from __future__ import annotations

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
