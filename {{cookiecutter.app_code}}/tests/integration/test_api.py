"""The API contract over real HTTP: health, info, readiness, docs, and the error answers."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_health_is_ok(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_info_says_the_database_is_connected(api: httpx.Client, read_auth: dict[str, str]) -> None:
    body = api.get("/api/v1/info", headers=read_auth).json()
    assert body["database"] == "connected"
    assert body["app_code"] == "{{ cookiecutter.app_code }}"


def test_ready_sees_postgres_redis_and_a_worker(
    api: httpx.Client, read_auth: dict[str, str]
) -> None:
    response = api.get("/api/v1/ready", headers=read_auth)
    assert response.status_code == 200, response.text
    assert response.json()["components"]["postgres"] == "ok"
    assert response.json()["components"]["redis"] == "ok"
    assert response.json()["components"]["worker"].startswith("ok")


def test_openapi_documents_every_status_code(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    post = spec["paths"]["/api/v1/jobs"]["post"]["responses"]
    assert {"202", "401", "409", "422", "503"} <= set(post)
    get = spec["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]
    assert {"200", "404", "503"} <= set(get)
    assert "503" in spec["paths"]["/api/v1/ready"]["get"]["responses"]
    for page in ("/docs", "/redoc"):
        response = api.get(page)
        assert response.status_code == 200
        assert "openapi.json" in response.text


def test_submit_without_token_is_401(
    api: httpx.Client, read_auth: dict[str, str], job_id: Callable[[str], str]
) -> None:
    body = {"job_id": job_id("noauth"), "function": "hello"}
    assert api.post("/api/v1/jobs", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    response = api.post("/api/v1/jobs", json=body, headers=wrong)
    assert response.status_code == 401
    assert "API_TOKEN" in response.json()["detail"]
    assert api.get(f"/api/v1/jobs/{body['job_id']}", headers=read_auth).status_code == 404


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param({"job_id": "has space", "function": "hello"}, "job_id", id="id-with-space"),
        pytest.param({"job_id": "x" * 129, "function": "hello"}, "job_id", id="id-129-chars"),
        pytest.param({"job_id": "cron:mine", "function": "hello"}, "reserved", id="id-cron-prefix"),
        pytest.param(
            {"job_id": "ok-id", "function": "nope"}, "known: hello", id="unknown-function"
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "params": [1]}, "params", id="params-list"
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "params": {"_job_id": "x"}},
            "reserved by arq",
            id="params-underscore-key",
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "params": {"name": "x" * 70_000}},
            "limit is 65536",
            id="params-over-64KiB",
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "params": {"colour": "red"}},
            "colour",
            id="params-unknown-to-the-job",
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "params": {"sleep_ms": "soon"}},
            "sleep_ms",
            id="params-wrong-type",
        ),
        pytest.param(
            {
                "job_id": "ok-id",
                "function": "hello",
                "delay_seconds": 5,
                "run_at": "2030-01-01T09:00:00Z",
            },
            "not both",
            id="delay-and-run_at",
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "run_at": "2030-01-01T09:00:00"},
            "no time zone",
            id="run_at-without-zone",
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "delay_seconds": -1},
            "delay_seconds",
            id="negative-delay",
        ),
        pytest.param(
            {"job_id": "ok-id", "function": "hello", "priority": "urgent"},
            "priority",
            id="unknown-priority",
        ),
    ],
)
def test_bad_submissions_are_422_with_a_reason(
    api: httpx.Client, auth: dict[str, str], body: dict[str, object], says: str
) -> None:
    response = api.post("/api/v1/jobs", json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert says in response.text


def test_unknown_job_is_404(api: httpx.Client, read_auth: dict[str, str]) -> None:
    response = api.get("/api/v1/jobs/never-submitted-0", headers=read_auth)
    assert response.status_code == 404
    assert "never-submitted-0" in response.json()["detail"]
