"""The hot path of POST /api/v1/jobs (api/fast_path.py) answers exactly as the route does.

A plain valid submission (Content-Type `application/json`, API_TOKEN) is answered by the hot
path; the same submission sent as `application/json; charset=utf-8` goes through FastAPI's
route. Both must give the same statuses, headers, bodies, trace and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

APP = "{{ cookiecutter.app_code }}"
TRACE_ID = "5bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
PATHS = {"fast": "application/json", "full": "application/json; charset=utf-8"}
SUBMISSIONS = 7


def counts(api: httpx.Client, auth: dict[str, str]) -> dict[str, float]:
    """The submission counter and the 202/409 request counts of POST /api/v1/jobs."""
    text = api.get("/metrics", headers=auth).text
    found = {"submitted": 0.0, "202": 0.0, "409": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{APP}_jobs_submitted_total" and s.labels.get("function") == "hello":
                found["submitted"] = s.value
            if (
                s.name == f"{APP}_http_request_duration_seconds_count"
                and s.labels.get("route") == "/api/v1/jobs"
                and s.labels.get("method") == "POST"
                and s.labels.get("status") in ("202", "409")
            ):
                found[s.labels["status"]] = s.value
    return found


def post(
    api: httpx.Client, auth: dict[str, str], kind: str, job_id: str, **headers: str
) -> httpx.Response:
    body = {"job_id": job_id, "function": "hello", "params": {"name": "fast"}}
    return api.post(
        "/api/v1/jobs",
        content=json.dumps(body).encode(),
        headers={**auth, "Content-Type": PATHS[kind], **headers},
    )


def shape(response: httpx.Response) -> tuple[int, dict[str, str], list[str]]:
    """What must match between the two paths: status, headers (values that do not vary per
    request), the body's keys."""
    varying = {"date", "traceparent", "location", "content-length"}
    headers = {k: v for k, v in response.headers.items() if k not in varying}
    return response.status_code, headers, sorted(response.json())


def test_the_hot_path_answers_as_the_route_does(
    api: httpx.Client, auth: dict[str, str], job_id: Callable[[str], str]
) -> None:
    shapes = {}
    for kind in PATHS:
        jid = job_id(f"fastpath-{kind}")
        accepted = post(api, auth, kind, jid, traceparent=PARENT)
        assert accepted.status_code == 202, accepted.text
        assert accepted.headers["location"] == f"/api/v1/jobs/{jid}"
        assert accepted.json()["job_id"] == jid
        assert accepted.json()["trace_id"] == TRACE_ID  # the caller's trace continues
        assert accepted.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
        again = post(api, auth, kind, jid)
        assert again.status_code == 409, again.text
        assert jid in again.json()["detail"]
        assert again.headers["traceparent"].split("-")[1] != TRACE_ID  # a trace of its own
        shapes[kind] = (shape(accepted), shape(again))
    assert shapes["fast"] == shapes["full"]
    assert shapes["fast"][0][1]["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_both_paths_count_every_submission_exactly(
    api: httpx.Client, auth: dict[str, str], job_id: Callable[[str], str], kind: str
) -> None:
    before = counts(api, auth)
    ids = [job_id(f"fastcount-{kind}-{n}") for n in range(SUBMISSIONS)]
    for jid in ids:
        assert post(api, auth, kind, jid).status_code == 202
    assert post(api, auth, kind, ids[0]).status_code == 409
    after = counts(api, auth)
    assert after["submitted"] - before["submitted"] == SUBMISSIONS
    assert after["202"] - before["202"] == SUBMISSIONS
    assert after["409"] - before["409"] == 1


@pytest.mark.parametrize(
    ("case", "body", "status"),
    [
        ("not-json", b"{nope", 422),
        ("nan-in-params", b'{"job_id": "x-nan", "function": "hello", "params": {"a": NaN}}', 422),
        ("unknown-function", b'{"job_id": "x-fn", "function": "nope"}', 422),
        ("extra-field", b'{"job_id": "x-extra", "function": "hello", "parms": {}}', 422),
        ("bad-params", b'{"job_id": "x-params", "function": "hello", "params": {"name": ""}}', 422),
    ],
)
def test_what_the_hot_path_declines_the_route_answers(
    api: httpx.Client, auth: dict[str, str], case: str, body: bytes, status: int
) -> None:
    """Invalid bodies with every header the hot path wants: the route's documented 422."""
    headers = {**auth, "Content-Type": "application/json"}
    response = api.post("/api/v1/jobs", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], list)
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["traceparent"].startswith("00-")
