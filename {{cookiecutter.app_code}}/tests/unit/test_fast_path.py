"""Which submissions the hot path of POST /api/v1/jobs takes (api/fast_path.py): only those
it can answer exactly as the route would; every other one goes to the full application."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from {{ cookiecutter.app_code }}.api.fast_path import FastSubmit, replay
from {{ cookiecutter.app_code }}.core.config import Settings

TOKEN = "w" * 32
READ_TOKEN = "r" * 32
GOOD = {
    b"authorization": f"Bearer {TOKEN}".encode(),
    b"content-type": b"application/json",
    b"content-length": b"60",
}


async def nothing(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


def hot_path() -> FastSubmit:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        api_token=SecretStr(TOKEN),
        api_read_token=SecretStr(READ_TOKEN),
        api_max_body_bytes=4096,
    )
    return FastSubmit(nothing, settings)


def scope(headers: dict[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers.items())}


def test_a_plain_submission_with_api_token_qualifies() -> None:
    found = hot_path().headers(scope({**GOOD, b"traceparent": b"00-ab-cd-01"}))
    assert found is not None
    assert found[b"traceparent"] == b"00-ab-cd-01"


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("no-token", {b"authorization": b""}),
        ("wrong-token", {b"authorization": b"Bearer nope"}),
        ("read-token", {b"authorization": f"Bearer {READ_TOKEN}".encode()}),
        ("lower-case-scheme", {b"authorization": f"bearer {TOKEN}".encode()}),
        ("charset", {b"content-type": b"application/json; charset=utf-8"}),
        ("form", {b"content-type": b"application/x-www-form-urlencoded"}),
        ("chunked", {b"content-length": b""}),
        ("over-the-limit", {b"content-length": b"4097"}),
        ("tracestate", {b"tracestate": b"vendor=1"}),
    ],
)
def test_anything_else_goes_to_the_route(case: str, change: dict[bytes, bytes]) -> None:
    headers = {k: v for k, v in {**GOOD, **change}.items() if v}
    assert hot_path().headers(scope(headers)) is None


def test_a_valid_body_is_parsed_with_its_checked_params() -> None:
    parsed = FastSubmit.parse(b'{"job_id": "a-1", "function": "hello", "params": {"name": "x"}}')
    assert parsed is not None
    submission, params = parsed
    assert (submission.job_id, submission.function, params) == ("a-1", "hello", {"name": "x"})


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{nope",
        b"[]",
        b'{"job_id": "a-1", "function": "hello", "params": {"a": NaN}}',
        b'{"job_id": "a-1", "function": "hello", "params": {"n": 123456789012345678901234}}',
        b'{"job_id": "a-1", "function": "nope"}',
        b'{"job_id": "a-1", "function": "hello", "parms": {}}',
        b'{"job_id": "a-1", "function": "hello", "params": {"name": ""}}',
        b'{"job_id": "cron:x", "function": "hello"}',
    ],
    ids=[
        "empty",
        "not-json",
        "not-an-object",
        "nan",
        "integer-beyond-64-bits",
        "unknown-function",
        "misspelt-field",
        "invalid-params",
        "reserved-id",
    ],
)
def test_bodies_the_route_must_judge_are_declined(body: bytes) -> None:
    assert FastSubmit.parse(body) is None


def test_a_declined_request_reaches_the_route_with_its_body() -> None:
    later = [{"type": "http.disconnect"}]

    async def receive() -> dict[str, object]:
        return later.pop()

    async def run() -> list[object]:
        again = replay(b'{"a": 1}', receive)
        return [await again(), await again()]

    first, second = asyncio.run(run())
    assert first == {"type": "http.request", "body": b'{"a": 1}', "more_body": False}
    assert second == {"type": "http.disconnect"}
