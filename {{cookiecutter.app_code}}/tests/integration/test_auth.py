"""Who may do what, over real HTTP: every route x (no token, API_READ_TOKEN, API_TOKEN), the
OpenAPI document's security schemes, the terse readiness answer, and the status page's login
(redirects, the session cookie, CSRF, logout, `next` that never leaves the site).

Tests that fail logins on purpose send their own X-Forwarded-For (uvicorn trusts it from
127.0.0.1), so the login throttle they fill is not the one other tests log in through.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from {{ cookiecutter.app_code }}.core.config import Settings

from ..conftest import csrf_of, log_in

pytestmark = pytest.mark.integration

NONE, READ, FULL = "none", "read", "full"
# (method, path, expected status for no token, the read token, the full token).
ROUTES = [
    ("GET", "/api/v1/jobs?limit=1", 401, 200, 200),
    ("GET", "/api/v1/jobs/{job_id}", 401, 200, 200),
    ("GET", "/api/v1/info", 401, 200, 200),
    ("POST", "/api/v1/jobs", 401, 403, 202),
    ("GET", "/api/v1/ready", 200, 200, 200),
    ("GET", "/health", 200, 200, 200),
]
CASES = [
    pytest.param(method, path, who, codes[i], id=f"{method} {path} {who}")
    for method, path, *codes in ROUTES
    for i, who in enumerate((NONE, READ, FULL))
]


@pytest.fixture(scope="module")
def known_job(api: httpx.Client, auth: dict[str, str]) -> str:
    job_id = f"auth-{uuid.uuid4().hex[:12]}"
    body = {"job_id": job_id, "function": "hello", "params": {}}
    assert api.post("/api/v1/jobs", json=body, headers=auth).status_code == 202
    return job_id


def _headers(who: str, settings: Settings) -> dict[str, str]:
    token = {READ: settings.api_read_token, FULL: settings.api_token}.get(who)
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


@pytest.mark.parametrize(("method", "path", "who", "expected"), CASES)
def test_who_may_do_what(
    api: httpx.Client,
    settings: Settings,
    known_job: str,
    method: str,
    path: str,
    who: str,
    expected: int,
) -> None:
    body = {"job_id": f"auth-{uuid.uuid4().hex[:12]}", "function": "hello", "params": {}}
    response = api.request(
        method,
        path.replace("{job_id}", known_job),
        json=body if method == "POST" else None,
        headers=_headers(who, settings),
    )
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert "no token" in response.json()["detail"]
        assert "API_READ_TOKEN" in response.json()["detail"] or method == "POST"
    if expected == 403:
        detail = response.json()["detail"]
        assert "read-only" in detail and "a write needs" in detail and "API_TOKEN" in detail


@pytest.mark.parametrize("path", ["/api/v1/jobs?limit=1", "/api/v1/info"])
def test_a_wrong_token_is_401_saying_so(api: httpx.Client, path: str) -> None:
    response = api.get(path, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert response.json()["detail"].startswith("wrong token")


def test_openapi_declares_the_security_schemes_of_each_route(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ReadToken"] == {**schemes["ReadToken"], "type": "http", "scheme": "bearer"}
    assert schemes["APIToken"] == {**schemes["APIToken"], "type": "http", "scheme": "bearer"}

    def security(path: str, method: str) -> set[str]:
        return {name for item in spec["paths"][path][method].get("security", []) for name in item}

    assert security("/api/v1/jobs", "post") == {"APIToken"}
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/info"):
        assert security(path, "get") == {"ReadToken", "APIToken"}, path
        assert "401" in spec["paths"][path]["get"]["responses"], path
    assert "403" in spec["paths"]["/api/v1/jobs"]["post"]["responses"]
    assert security("/health", "get") == set()


def test_ready_without_a_token_says_only_ok_or_down(
    api: httpx.Client, read_auth: dict[str, str]
) -> None:
    terse = api.get("/api/v1/ready").json()
    assert set(terse["components"]) == {"postgres", "redis", "worker"}
    assert set(terse["components"].values()) <= {"ok", "down"}, terse
    assert "API_READ_TOKEN" in terse["detail"]
    detailed = api.get("/api/v1/ready", headers=read_auth).json()
    assert detailed["components"]["worker"].startswith("ok (")  # "ok (1 live)": the detail


# --- the status page's login ------------------------------------------------------------------


@pytest.fixture
def browser_like(base_url: str) -> Iterator[Callable[[], httpx.Client]]:
    """A fresh cookie jar, from an address of its own (X-Forwarded-For)."""
    clients: list[httpx.Client] = []

    def make() -> httpx.Client:
        address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
        client = httpx.Client(base_url=base_url, timeout=10, headers={"X-Forwarded-For": address})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize(
    ("path", "next_"),
    [
        ("/app/v1/status", "%2Fapp%2Fv1%2Fstatus"),
        ("/app/v1/status?status=failed", "%2Fapp%2Fv1%2Fstatus%3Fstatus%3Dfailed"),
        ("/app/v1/jobs/some-job", "%2Fapp%2Fv1%2Fjobs%2Fsome-job"),
    ],
)
def test_a_page_without_a_session_redirects_to_the_login(
    api: httpx.Client, path: str, next_: str
) -> None:
    response = api.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/app/v1/login?next={next_}"


@pytest.mark.parametrize("path", ["/app/v1/status/fragment", "/app/v1/jobs/some-job/fragment"])
def test_a_fragment_without_a_session_is_401(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 401
    assert "log in again" in response.text


def test_login_sets_a_strict_httponly_cookie_and_goes_back(
    browser_like: Callable[[], httpx.Client], settings: Settings
) -> None:
    client = browser_like()
    response = log_in(client, settings.api_read_token.get_secret_value())
    assert response.status_code == 303
    assert response.headers["location"] == "/app/v1/status"
    cookie = response.headers["set-cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "max-age", "path"} <= flags, cookie
    assert "samesite=strict" in cookie.lower() and "path=/app" in cookie.lower()
    assert "secure" not in flags, "Secure over plain http: the browser would drop the cookie"
    assert f"max-age={settings.session_max_age_seconds}" in cookie.lower()
    page = client.get("/app/v1/status")
    assert page.status_code == 200
    assert 'data-role="read"' in page.text and "read-only" in page.text
    assert client.get("/app/v1/status/fragment").status_code == 200


def test_full_token_session_says_full_access(
    browser_like: Callable[[], httpx.Client], settings: Settings
) -> None:
    client = browser_like()
    assert log_in(client, settings.api_token.get_secret_value()).status_code == 303
    page = client.get("/app/v1/status")
    assert 'data-role="write"' in page.text and "full access" in page.text


def test_wrong_token_is_401_with_the_form_again(
    browser_like: Callable[[], httpx.Client],
) -> None:
    response = log_in(browser_like(), "not-a-token")
    assert response.status_code == 401
    assert "neither API_READ_TOKEN nor API_TOKEN" in response.text
    assert 'name="token"' in response.text


def test_login_without_the_forms_csrf_token_is_refused(
    browser_like: Callable[[], httpx.Client], settings: Settings
) -> None:
    client = browser_like()
    client.get("/app/v1/login")
    token = settings.api_read_token.get_secret_value()
    forged = client.post("/app/v1/login", data={"token": token, "csrf_token": "forged"})
    assert forged.status_code == 403
    assert "expired or came without its cookie" in forged.text
    # From another site: no cookie at all (SameSite=Strict keeps it home), a token of its own.
    other = browser_like()
    blind = other.post("/app/v1/login", data={"token": token, "csrf_token": csrf_of(forged.text)})
    assert blind.status_code == 403
    assert other.get("/app/v1/status").status_code == 303


def test_logout_needs_the_csrf_token_and_ends_the_session(
    browser_like: Callable[[], httpx.Client], settings: Settings
) -> None:
    client = browser_like()
    assert log_in(client, settings.api_read_token.get_secret_value()).status_code == 303
    page = client.get("/app/v1/status")
    refused = client.post("/app/v1/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403 and "still logged in" in refused.text
    assert client.get("/app/v1/status").status_code == 200
    out = client.post("/app/v1/logout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/app/v1/login?out=1"
    assert client.get("/app/v1/status").status_code == 303
    assert "You are logged out." in client.get("/app/v1/login?out=1").text


@pytest.mark.parametrize(
    "next_",
    [
        "https://evil.example/",
        "//evil.example/app/v1/status",
        "/\\evil.example",
        "/app/\\evil.example",
        "http:/app/v1/status",
        "/api/v1/jobs",
        "javascript:alert(1)",
    ],
)
def test_next_never_leaves_the_status_page(
    browser_like: Callable[[], httpx.Client], settings: Settings, next_: str
) -> None:
    client = browser_like()
    form = client.get("/app/v1/login", params={"next": next_})
    assert f'value="{next_}"' not in form.text
    response = client.post(
        "/app/v1/login",
        data={
            "token": settings.api_read_token.get_secret_value(),
            "csrf_token": csrf_of(form.text),
            "next": next_,
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/app/v1/status"


def test_next_keeps_a_local_page_and_its_query(
    browser_like: Callable[[], httpx.Client], settings: Settings
) -> None:
    client = browser_like()
    target = "/app/v1/status?status=failed&q=a"
    form = client.get("/app/v1/login", params={"next": target})
    response = client.post(
        "/app/v1/login",
        data={
            "token": settings.api_read_token.get_secret_value(),
            "csrf_token": csrf_of(form.text),
            "next": target,
        },
    )
    assert response.headers["location"] == target
