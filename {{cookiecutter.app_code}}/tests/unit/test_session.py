"""The status page's session helpers without a server: `next`, the throttle, the tokens."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from {{ cookiecutter.app_code }}.api.deps import Access, access_of
from {{ cookiecutter.app_code }}.api.session import LoginThrottle, local_next
from {{ cookiecutter.app_code }}.core.config import Settings

READ, WRITE, SECRET = "r" * 43, "w" * 43, "s" * 43


def settings(**values: str) -> Settings:
    given = {"api_token": WRITE, "api_read_token": READ, "session_secret": SECRET, **values}
    return Settings(_env_file=None, **given)  # type: ignore[call-arg, arg-type]


def request(root_path: str = "") -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "root_path": root_path}
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/app/v1/jobs/a?b=c", "/app/v1/jobs/a?b=c"),
        (None, "/app/v1/status"),
        ("https://evil.example/app/", "/app/v1/status"),
        ("//evil.example/app/", "/app/v1/status"),
        ("/app/\\\\evil", "/app/v1/status"),
        ("/app/v1/status\n", "/app/v1/status"),
        ("/api/v1/jobs", "/app/v1/status"),
        ("/app/" + "x" * 3000, "/app/v1/status"),
    ],
)
def test_next_is_a_status_page_path_or_the_status_page(given: str | None, expected: str) -> None:
    assert local_next(given, request()) == expected


def test_next_keeps_the_root_path() -> None:
    assert local_next("/svc/app/v1/status", request("/svc")) == "/svc/app/v1/status"
    assert local_next("/app/v1/status", request("/svc")) == "/svc/app/v1/status"


def test_throttle_after_five_failures_and_forgets_a_success() -> None:
    throttle = LoginThrottle(limit=5, window=60)
    for _ in range(4):
        throttle.failed("a")
    assert throttle.retry_after("a") == 0
    throttle.failed("a")
    assert 1 <= throttle.retry_after("a") <= 61
    assert throttle.retry_after("b") == 0
    throttle.succeeded("a")
    assert throttle.retry_after("a") == 0


def test_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = LoginThrottle(limit=1, window=60, max_clients=3)
    for n in range(10):
        throttle.failed(str(n))
    assert [throttle.retry_after(str(n)) > 0 for n in range(10)] == [False] * 7 + [True] * 3


def test_tokens_say_what_they_may_do() -> None:
    s = settings()
    assert access_of(s, WRITE) is Access.WRITE
    assert access_of(s, READ) is Access.READ
    assert access_of(s, "") is None and access_of(s, READ + "x") is None


def test_an_unset_read_token_lets_nothing_in() -> None:
    assert access_of(settings(api_read_token=""), "") is None


def test_equal_tokens_and_a_short_session_secret_are_refused() -> None:
    with pytest.raises(ValidationError, match="API_READ_TOKEN equals API_TOKEN"):
        settings(api_read_token=WRITE)
    with pytest.raises(ValidationError, match="SESSION_SECRET is 5 characters"):
        settings(session_secret="short")
