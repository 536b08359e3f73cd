"""Redis and PostgreSQL go away and come back. The ledger is the source of truth: while Redis
is away (stopped, hung, or slow) every submission is still accepted and runs once when it is
back; while PostgreSQL is away submissions answer 503 and nothing runs half-recorded; the API
and the worker recover by themselves (same processes throughout)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import Ledger, Process, free_port, frozen, post_jobs, runs

pytestmark = pytest.mark.reliability

REDIS_OUTAGE_S = 180.0  # "a restart of a few minutes"
POSTGRES_OUTAGE_S = 120.0


def post(api: httpx.Client, auth: dict[str, str], jid: str, **params: Any) -> httpx.Response:
    body = {"job_id": jid, "function": "hello", "params": params}
    return api.post("/api/v1/jobs", json=body, headers=auth)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def accepted_within(
    api: httpx.Client, auth: dict[str, str], make_id: Callable[[str], str], within: float
) -> tuple[list[str], list[int]]:
    """Submit until one is accepted; returns the accepted id(s) and every status seen."""
    deadline = time.monotonic() + within
    seen: list[int] = []
    while time.monotonic() < deadline:
        jid = make_id("back")
        response = post(api, auth, jid, name="back")
        seen.append(response.status_code)
        assert response.status_code != 500, response.text
        if response.status_code == 202:
            return [jid], seen
        time.sleep(0.1)
    pytest.fail(f"no submission accepted within {within:.0f} s of the restart: {seen}")


def test_redis_down_at_submit_time_accepts_and_runs_when_back(
    stack: ModuleType,
    settings: Settings,
    api: httpx.Client,
    auth: dict[str, str],
    read_auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
    spawn_api: Callable[..., tuple[Process, httpx.Client]],
) -> None:
    worker, api_pid = stack.read_pid("worker"), stack.read_pid("api")
    stack.stop_service("redis")
    down_at = time.monotonic()
    assert not stack.redis_answers(settings)

    # Accepted: committed to the ledger, queued there, within REDIS_TIMEOUT (+ slack).
    ids = [job_id(f"nored{i}") for i in range(5)]
    for jid in ids:
        response, took = timed(lambda jid=jid: post(api, auth, jid, name="nored"))  # type: ignore[misc]
        assert response.status_code == 202, response.text
        assert took < settings.redis_timeout + 1.0, f"the 202 took {took:.2f} s"
        assert ledger.job(jid)["status"] == "queued"  # type: ignore[index]
    assert api.get(f"/api/v1/jobs/{ids[0]}", headers=read_auth).json()["status"] == "queued"

    # Readiness says what is missing; liveness and reads carry on.
    readiness = api.get("/api/v1/ready", headers=read_auth)
    assert readiness.status_code == 503
    assert readiness.json()["components"]["redis"].startswith("unavailable")
    assert readiness.json()["components"]["postgres"] == "ok"
    assert api.get("/health").status_code == 200

    # An API that starts now starts anyway, and accepts too.
    late_api, late = spawn_api()
    late_id = job_id("late")
    assert post(late, auth, late_id, name="late").status_code == 202

    time.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))  # a real outage, not a blip
    stack.start_redis(settings)

    rows = ledger.wait_for([*ids, late_id], within=30)
    assert all(r["tries"] == 1 for r in rows), [r["tries"] for r in rows]
    assert runs([*ids, late_id]) == dict.fromkeys([*ids, late_id], 1)
    _, statuses = accepted_within(api, auth, job_id, within=5)
    assert statuses == [202]
    assert stack.read_pid("worker") == worker, "the worker was restarted"
    assert stack.read_pid("api") == api_pid, "the API was restarted"
    assert late_api.alive()


def test_redis_frozen_still_accepts_within_2_s(
    stack: ModuleType,
    settings: Settings,
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
) -> None:
    """A hung Redis (SIGSTOP: connections open, no answers) must not hang the API."""
    pid = stack.read_pid("redis")
    assert pid
    ids = [job_id(f"frozen{i}") for i in range(3)]
    with frozen(pid):
        answers = [timed(lambda jid=jid: post(api, auth, jid)) for jid in ids]  # type: ignore[misc]
        readiness, took_ready = timed(lambda: api.get("/api/v1/ready"))
    for response, took in answers:
        assert response.status_code == 202, response.text
        assert took < 2.0, f"the 202 took {took:.2f} s"
    assert readiness.status_code == 503 and took_ready < 3.0
    ledger.wait_for(ids, within=30)
    assert runs(ids) == dict.fromkeys(ids, 1)


def test_redis_down_for_3_minutes_the_worker_survives_and_drains(
    stack: ModuleType,
    settings: Settings,
    api: httpx.Client,
    auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
    redis_db: redis.Redis,
) -> None:
    worker = stack.read_pid("worker")
    # More jobs than the worker runs at once: some are running, the rest wait in the queue.
    before = [job_id(f"long{i}") for i in range(3 * settings.worker_max_jobs)]
    assert set(post_jobs(api, auth, before, name="long", sleep_ms=1000).values()) == {202}
    assert any(not redis_db.exists(f"arq:in-progress:{j}") for j in before), "none waited"

    stack.stop_service("redis")
    down_at = time.monotonic()
    during = [job_id(f"during{i}") for i in range(20)]
    assert set(post_jobs(api, auth, during, name="during").values()) == {202}
    while time.monotonic() - down_at < REDIS_OUTAGE_S:
        assert stack.read_pid("worker") == worker, "the worker exited during the outage"
        time.sleep(5)
    stack.start_redis(settings)

    everything = before + during
    rows = ledger.wait_for(everything, within=120)
    assert ledger.count("hello", everything) == len(everything)
    assert runs(everything) == dict.fromkeys(everything, 1)
    assert all(r["tries"] == 1 for r in rows), sorted({r["tries"] for r in rows})
    assert stack.read_pid("worker") == worker, "the worker was restarted"


class DelayedReplies:
    """A TCP proxy in a thread of its own: what the client sends goes to Redis at once, what
    Redis answers reaches the client `delay` seconds late, in order (a slow link, a Redis
    stalled by a fork or a swap)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> DelayedReplies:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port), self.loop
        ).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer, 0.0),
            self._pump(up_reader, writer, self.delay),
            return_exceptions=True,
        )

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float
    ) -> None:
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                if not data:
                    dst.close()
                    return
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await src.read(65536):
                chunks.put_nowait((self.loop.time() + delay, data))
        finally:
            chunks.put_nowait((self.loop.time() + delay, b""))
            await sender


def test_redis_slower_than_redis_timeout_every_answer_agrees_with_what_runs(
    settings: Settings,
    spawn_api: Callable[..., tuple[Process, httpx.Client]],
    auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
) -> None:
    """Redis's replies come after REDIS_TIMEOUT: the API cannot tell whether Redis took a job.
    The ledger decides: 202 ⇒ runs exactly once; any error answer ⇒ never runs."""
    ids = [job_id(f"slow{i}") for i in range(30)]
    answers: dict[str, int] = {}
    with DelayedReplies(settings.redis_port, settings.redis_timeout + 0.5) as proxy:
        _, slow = spawn_api(REDIS_PORT=str(proxy.port))
        for jid in ids:
            answers[jid] = post(slow, auth, jid, name="slow").status_code
            time.sleep(0.1)  # spread over several of the API's 2 s Redis back-offs
        accepted = [j for j, code in answers.items() if code == 202]
        assert len(accepted) == len(ids), f"PostgreSQL was up, yet: {answers}"
        ledger.wait_for(accepted, within=60)
    refused = [j for j in ids if j not in accepted]
    counts = runs(ids)
    assert {j: counts[j] for j in accepted} == dict.fromkeys(accepted, 1)
    assert {j: counts[j] for j in refused} == dict.fromkeys(refused, 0)
    assert all(ledger.job(j) is None for j in refused)
    assert ledger.count("hello", accepted) == len(accepted)


@pytest.fixture
def postgres_back(stack: ModuleType, settings: Settings) -> Iterator[None]:
    yield
    if not stack.pg_answers(settings):
        stack.start_postgres(settings)


def test_postgres_down_for_2_minutes_loses_nothing_and_costs_no_try(
    stack: ModuleType,
    settings: Settings,
    api: httpx.Client,
    auth: dict[str, str],
    read_auth: dict[str, str],
    job_id: Callable[[str], str],
    ledger: Ledger,
    redis_db: redis.Redis,
    postgres_back: None,
) -> None:
    worker, api_pid = stack.read_pid("worker"), stack.read_pid("api")
    # 200 jobs of half a second: running and queued when PostgreSQL stops.
    ids = [job_id(f"pg{i}") for i in range(200)]
    assert set(post_jobs(api, auth, ids, name="pg", sleep_ms=500).values()) == {202}
    stack.stop_service("postgres")
    down_at = time.monotonic()
    assert not stack.pg_answers(settings)

    # A submission: 503 at once, saying why and what to do, and nothing reaches Redis.
    refused = job_id("refused")
    response, took = timed(lambda: post(api, auth, refused))
    assert response.status_code == 503, response.text
    assert took < settings.db_connect_timeout + 1.0, f"the 503 took {took:.2f} s"
    assert "PostgreSQL" in response.json()["detail"]
    assert "same job id" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert redis_db.exists(f"arq:job:{refused}") == 0, "a refused submission reached Redis"
    readiness = api.get("/api/v1/ready", headers=read_auth)
    assert readiness.status_code == 503
    assert readiness.json()["components"]["postgres"].startswith("unavailable")
    assert api.get("/health").status_code == 200

    while time.monotonic() - down_at < POSTGRES_OUTAGE_S:
        assert stack.read_pid("worker") == worker, "the worker exited during the outage"
        time.sleep(5)
    stack.start_postgres(settings)

    back, statuses = accepted_within(api, auth, job_id, within=10)
    assert statuses[0] in (202, 503), statuses
    rows = ledger.wait_for(ids + back, within=120)
    assert ledger.count("hello", ids + back) == len(ids + back)
    # Waiting for the ledger never spends a try: every job ends on its first.
    assert all(r["tries"] == 1 for r in rows), sorted({r["tries"] for r in rows})
    assert ledger.job(refused) is None
    log = (stack.LOGS / "worker.log").read_text(errors="replace")
    assert "no claims until it is back" in log and "claiming jobs again" in log
    assert stack.read_pid("worker") == worker, "the worker was restarted"
    assert stack.read_pid("api") == api_pid, "the API was restarted"
