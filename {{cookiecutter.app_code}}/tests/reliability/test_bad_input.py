"""Bad requests get a 4xx that says what to fix, never a 500, and never leave a ledger row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from .conftest import Ledger

pytestmark = pytest.mark.reliability

ID = "{id}"  # replaced by a fresh valid id, so a refusal is never a 409 in disguise


@dataclass
class Bad:
    name: str
    status: int
    says: str  # a substring of the error message: what to fix
    body: Any = None  # a JSON value (ID replaced) ...
    raw: bytes | None = None  # ... or raw bytes
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


def job(job_id: Any = ID, function: Any = "hello", **params: Any) -> dict[str, Any]:
    return {"job_id": job_id, "function": function, "params": params}


def not_the_token(name: str, authorization: str) -> Bad:
    """A good job sent with an Authorization header that is not API_TOKEN's."""
    headers = {"Authorization": authorization}
    return Bad(name, 401, "API_TOKEN", body=job(), auth=False, headers=headers)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


BAD_IDS = {
    "space": "has space",
    "tab": "tab\there",
    "newline": "line\nbreak",
    "nul": "nul\x00byte",
    "escape": "esc\x1b[31m",
    "rtl-override": "abc\u202edef",
    "emoji": "job-\U0001f600",
    "fullwidth-digits": "\uff11\uff12\uff13",
    "lone-surrogate": "x\ud800",
    "dot-dot-slash": "../etc/passwd",
    "slash": "a/b",
    "backslash": "a\\b",
    "percent-encoded": "%2e%2e%2f",
    "sql-quote": "x' OR '1'='1",
    "sql-drop": "x'; DROP TABLE job; --",
    "empty": "",
    "leading-dash": "-abc",
    "leading-dot": ".abc",
    "129-chars": "a" * 129,
    "4096-chars": "a" * 4096,
    "cron-prefix": "cron:hello:1",
    "cron-prefix-upper": "CRON:x",
}

CORPUS: list[Bad] = [
    # --- the body as a whole
    Bad("invalid-json", 422, "not valid JSON", raw=b'{"job_id": '),
    Bad("trailing-garbage", 422, "not valid JSON", raw=b'{"job_id": "a", "function": "hello"} x'),
    Bad("single-quotes", 422, "not valid JSON", raw=b"{'job_id': 'a'}"),
    Bad("not-utf8", 422, "not UTF-8", raw=b'{"job_id": "a\xff", "function": "hello"}'),
    Bad("empty-body", 422, "send a JSON object", raw=b""),
    Bad("json-null", 422, "send a JSON object", raw=b"null"),
    Bad("json-array", 422, "send a JSON object", body=[job()]),
    Bad("json-string", 422, "send a JSON object", body="hello"),
    Bad(
        "text-plain",
        422,
        "Content-Type: application/json",
        raw=b'{"job_id": "a", "function": "hello"}',
        headers={"Content-Type": "text/plain"},
    ),
    Bad("nested-5000-deep", 422, "nested too deeply", raw=b"[" * 5000 + b"]" * 5000),
    Bad("number-5000-digits", 422, "too many digits", raw=b'{"job_id": 1' + b"0" * 5000 + b"}"),
    Bad("body-200KB", 413, "API_MAX_BODY_BYTES", body=job(name="x" * 200_000)),
    # --- fields
    Bad("missing-job-id", 422, "job_id", body={"function": "hello"}),
    Bad("missing-function", 422, "function", body={"job_id": ID}),
    Bad("job-id-number", 422, "job_id", body=job(job_id=12345)),
    Bad("job-id-null", 422, "job_id", body=job(job_id=None)),
    Bad("job-id-object", 422, "job_id", body=job(job_id={"a": 1})),
    Bad("function-list", 422, "function", body=job(function=["hello"])),
    Bad("function-unknown", 422, "known: ", body=job(function="nope")),
    Bad("function-empty", 422, "known: ", body=job(function="")),
    Bad("function-case", 422, "known: ", body=job(function="HELLO")),
    Bad("function-space", 422, "known: ", body=job(function="hello ")),
    Bad("function-dunder", 422, "known: ", body=job(function="__import__")),
    Bad("function-cron-only", 422, "known: ", body=job(function="cleanup")),
    Bad("function-sql", 422, "known: ", body=job(function="hello'; DROP TABLE job; --")),
    Bad("misspelt-params", 422, "parms", body={"job_id": ID, "function": "hello", "parms": {}}),
    Bad("params-string", 422, "params", body={"job_id": ID, "function": "hello", "params": "x"}),
    Bad("params-list", 422, "params", body={"job_id": ID, "function": "hello", "params": [1]}),
    Bad("params-null", 422, "params", body={"job_id": ID, "function": "hello", "params": None}),
    # --- params
    Bad(
        "params-10000-keys",
        422,
        "more than 1000 keys",
        body={"job_id": ID, "function": "hello", "params": {f"k{i}": 0 for i in range(10_000)}},
    ),
    Bad("params-20-deep", 422, "nest deeper than", body=job(x=nested(20))),
    Bad("params-500-deep", 422, "nest deeper than", body=job(x=nested(500))),
    Bad("params-nul-value", 422, "NUL", body=job(name="a\x00b")),
    Bad("params-nul-key", 422, "NUL", body=job(**{"a\x00": 1})),
    Bad("params-lone-surrogate", 422, "lone surrogate", body=job(name="\udc00")),
    Bad(
        "params-nan",
        422,
        "NaN",
        raw=b'{"job_id": "{id}", "function": "hello", "params": {"x": NaN}}',
    ),
    Bad(
        "params-infinity",
        422,
        "NaN or Infinity",
        raw=b'{"job_id": "{id}", "function": "hello", "params": {"x": -Infinity}}',
    ),
    Bad("params-underscore-key", 422, "reserved by arq", body=job(_job_id="other")),
    Bad(
        "params-100KB-of-keys",
        422,
        "the limit is 65536",
        body=job(**{f"k{i}": "v" * 200 for i in range(500)}),
    ),
    Bad("params-unknown-key", 422, "colour", body=job(colour="red")),
    Bad("params-sleep-type", 422, "sleep_ms", body=job(sleep_ms="soon")),
    Bad("params-sleep-negative", 422, "sleep_ms", body=job(sleep_ms=-1)),
    Bad("params-sleep-huge", 422, "sleep_ms", body=job(sleep_ms=10**12)),
    Bad("params-name-empty", 422, "name", body=job(name="")),
    Bad("params-name-long", 422, "name", body=job(name="x" * 101)),
    Bad("params-name-object", 422, "name", body=job(name={"$gt": ""})),
    # --- the token
    Bad("no-token", 401, "API_TOKEN", body=job(), auth=False),
    not_the_token("wrong-token", "Bearer nope"),
    not_the_token("empty-bearer", "Bearer"),
    not_the_token("basic-auth", "Basic dXNlcjpwYXNz"),
    *[
        Bad(f"job-id-{name}", 422, "job_id", body=job(job_id=value))
        for name, value in BAD_IDS.items()
    ],
]


def _payload(case: Bad, fresh: str) -> bytes:
    if case.raw is not None:
        return case.raw.replace(b"{id}", fresh.encode())
    text = json.dumps(case.body).replace(json.dumps(ID), json.dumps(fresh))
    return text.encode()


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_bad_submission_is_a_4xx_saying_what_to_fix(
    api: httpx.Client, auth: dict[str, str], ledger: Ledger, case: Bad
) -> None:
    fresh = f"bad-input-{uuid.uuid4().hex[:12]}"
    headers = {"Content-Type": "application/json", **(auth if case.auth else {}), **case.headers}
    response = api.post("/api/v1/jobs", content=_payload(case, fresh), headers=headers)

    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    assert case.says in str(response.json()["detail"]), response.text[:500]
    assert len(response.content) < 20_000, "the error echoes too much of the request"
    assert ledger.job(fresh) is None, "a refused submission left a ledger row"


def _chunks(total: int, size: int = 16_384) -> Iterator[bytes]:
    yield b'{"job_id": "chunked", "function": "hello", "params": {"name": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}}'


def test_streamed_body_over_the_limit_is_413(api: httpx.Client, auth: dict[str, str]) -> None:
    """No Content-Length (chunked): counted as it arrives, refused once past the limit."""
    response = api.post(
        "/api/v1/jobs",
        content=_chunks(1_000_000),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert "API_MAX_BODY_BYTES" in response.json()["detail"]


BAD_READS = [
    ("/api/v1/jobs/never-submitted-0", 404, "never-submitted-0"),
    ("/api/v1/jobs/" + "a" * 129, 404, "no job"),
    ("/api/v1/jobs/..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
    ("/api/v1/jobs/x'%20OR%20'1'%3D'1", 404, "no job"),
    ("/api/v1/jobs/cron:%00", 422, "NUL"),
    ("/api/v1/jobs/%F0%9F%98%80", 404, "no job"),
    ("/api/v1/jobs?limit=0", 422, "limit"),
    ("/api/v1/jobs?limit=100000", 422, "limit"),
    ("/api/v1/jobs?limit=abc", 422, "limit"),
    ("/api/v1/jobs?status=bogus", 422, "status"),
    ("/api/v1/jobs?function=nope", 422, "known: "),
    ("/api/v1/jobs?function=%00", 422, "known: "),
    ("/api/v1/jobs?before=garbage", 400, "next_cursor"),
    ("/api/v1/jobs?before=%00%FF", 400, "next_cursor"),
    ("/api/v1/jobs?before=" + "A" * 500, 422, "before"),
]


@pytest.mark.parametrize(("path", "status", "says"), BAD_READS, ids=[p for p, _, _ in BAD_READS])
def test_bad_read_is_a_4xx_saying_what_to_fix(
    api: httpx.Client, read_auth: dict[str, str], path: str, status: int, says: str
) -> None:
    response = api.get(path, headers=read_auth)
    assert response.status_code == status, response.text[:500]
    assert says in str(response.json()["detail"]), response.text[:500]


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/api/v1/jobs/x"), ("PUT", "/api/v1/jobs"), ("PATCH", "/api/v1/jobs/x")],
)
def test_wrong_method_is_405_with_allow(api: httpx.Client, method: str, path: str) -> None:
    response = api.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"]
    assert response.json()["detail"] == "Method Not Allowed"
