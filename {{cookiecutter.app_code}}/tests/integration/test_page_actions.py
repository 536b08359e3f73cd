"""The status page's buttons over HTTP to the running API (`make up`), with real sessions.

Only a full-access session (API_TOKEN) sees Cancel, Retry and Retry all failed; every POST of
them needs the session's CSRF token: without it, with a wrong one, without a session or from
a read-only session the answer is 403 with what to do, and the job is left as it was. Retry
all failed retries exactly the failed jobs of the list's filter, after a confirmation page
that counts them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from {{ cookiecutter.app_code }}.core.config import Settings

from ..conftest import csrf_of, log_in

pytestmark = pytest.mark.integration

STATUS = "/app/v1/status"
BUTTON = re.compile(r'<button type="submit" class="act-(cancel|retry)"')


@pytest.fixture(scope="module")
def full_page_api(base_url: str, settings: Settings, api: httpx.Client) -> Iterator[httpx.Client]:
    """A client with a full-access status page session (logged in with API_TOKEN)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        response = log_in(client, settings.api_token.get_secret_value())
        assert response.status_code == 303, response.text[:300]
        yield client


@pytest.fixture
def submit(api: httpx.Client, auth: dict[str, str]) -> Callable[..., str]:
    def _submit(name: str, params: dict[str, Any]) -> str:
        job_id = f"pgact-{name}-{uuid.uuid4().hex[:8]}"
        body = {"job_id": job_id, "function": "hello", "params": params}
        response = api.post("/api/v1/jobs", json=body, headers=auth)
        assert response.status_code == 202, response.text[:300]
        return job_id

    return _submit


def buttons(html: str) -> list[str]:
    return BUTTON.findall(html)


def test_only_a_full_session_sees_the_buttons(
    page_api: httpx.Client,
    full_page_api: httpx.Client,
    submit: Callable[..., str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    failed = submit("seen", {"fail": True})
    wait_for_job(failed)
    for path in (f"{STATUS}?q={failed}", f"{STATUS}/fragment?q={failed}", f"/app/v1/jobs/{failed}"):
        full = full_page_api.get(path)
        assert full.status_code == 200, path
        assert buttons(full.text) == ["retry"], path
        read = page_api.get(path)
        assert read.status_code == 200, path
        assert buttons(read.text) == [], path
        assert "/cancel" not in read.text and "/retry" not in read.text, path
    assert "Retry all failed" in full_page_api.get(STATUS).text
    assert "Retry all failed" not in page_api.get(STATUS).text
    confirm = page_api.get(f"{STATUS}/retry-failed")
    assert confirm.status_code == 403
    assert "log in with API_TOKEN" in confirm.text


def _post(client: httpx.Client, path: str, **fields: str) -> httpx.Response:
    return client.post(path, data=fields, follow_redirects=False)


def test_forged_posts_are_refused_and_change_nothing(
    api: httpx.Client,
    base_url: str,
    page_api: httpx.Client,
    full_page_api: httpx.Client,
    submit: Callable[..., str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    failed = submit("forged", {"fail": True})
    wait_for_job(failed)
    token = csrf_of(full_page_api.get(f"/app/v1/jobs/{failed}").text)
    read_token = csrf_of(page_api.get(f"/app/v1/jobs/{failed}").text)
    paths = (
        f"/app/v1/jobs/{failed}/retry",
        f"/app/v1/jobs/{failed}/cancel",
        f"{STATUS}/retry-failed",
    )
    with httpx.Client(base_url=base_url, timeout=10) as stranger:
        for path in paths:
            cases = {
                "no token": (full_page_api, {}),
                "a wrong token": (full_page_api, {"csrf_token": "x" + token[1:]}),
                "another session's token": (full_page_api, {"csrf_token": read_token}),
                "a read-only session": (page_api, {"csrf_token": read_token}),
                "no session": (stranger, {"csrf_token": token}),
            }
            for case, (client, fields) in cases.items():
                response = _post(client, path, q=failed, **fields)
                assert response.status_code == 403, (path, case, response.status_code)
                assert "nothing was done" in response.text, (path, case)
                assert response.headers["content-type"].startswith("text/html")
            # Not JSON, not form-encoded: no token can be read, so refused too.
            body = {"csrf_token": token}
            assert full_page_api.post(path, json=body).status_code == 403, path
    assert wait_for_job(failed)["status"] == "failed"
    assert wait_for_job(failed)["tries"] == 1


HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def confirm_form(html: str) -> dict[str, str]:
    """The hidden fields of the confirmation page's form, as a browser would post them."""
    form = html[html.index('<form class="confirm"') :]
    form = form[: form.index("</form>")]
    return {name: value for name, value in HIDDEN.findall(form)}


def test_retry_all_failed_retries_exactly_the_failed_jobs_of_the_filter(
    full_page_api: httpx.Client,
    submit: Callable[..., str],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    tag = uuid.uuid4().hex[:6]
    mine = [submit(f"bulk{tag}-a", {"fail": True}) for _ in range(7)]
    fine = [submit(f"bulk{tag}-a", {}) for _ in range(3)]
    others = [submit(f"bulk{tag}-b", {"fail": True}) for _ in range(2)]
    for job_id in mine + fine + others:
        wait_for_job(job_id)
    prefix = f"pgact-bulk{tag}-a-"

    page = full_page_api.get(f"{STATUS}/retry-failed", params={"q": prefix})
    assert page.status_code == 200, page.text[:500]
    count = re.search(r'id="retry-count" data-count="(\d+)"', page.text)
    assert count and int(count[1]) == 7, page.text[:2000]
    fields = confirm_form(page.text)
    assert fields["q"] == prefix and fields["expected"] == "7"

    done = full_page_api.post(f"{STATUS}/retry-failed", data=fields, follow_redirects=False)
    assert done.status_code == 303, done.text[:500]
    assert "retried=7" in done.headers["location"]
    notice = full_page_api.get(done.headers["location"]).text
    assert "7 failed jobs queued again." in notice

    for job_id in mine:  # each ran again (and failed again: fail is still true)
        record = wait_for_job(job_id, ("failed",))
        assert record["tries"] == 2 or len(record.get("attempts", [])) == 2, record
    for job_id in fine + others:
        record = wait_for_job(job_id)
        assert record["tries"] == 1, record
    assert [wait_for_job(j)["status"] for j in others] == ["failed", "failed"]

    # Exactly one id: the exact match counts that job alone.
    one = full_page_api.get(
        f"{STATUS}/retry-failed", params={"q": others[0], "match": "exact"}
    ).text
    assert 'data-count="1"' in one
    none = full_page_api.get(f"{STATUS}/retry-failed", params={"q": f"{prefix}nothing"}).text
    assert 'data-count="0"' in none and "nothing to retry" in none
