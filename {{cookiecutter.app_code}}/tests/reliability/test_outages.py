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

import httpx
import pytest

from {{ cookiecutter.app_code }}.core.config import Settings

from .conftest import Rig, SpawnApi, free_port, frozen, runs

pytestmark = pytest.mark.reliability

REDIS_OUTAGE_S = 180.0  # "a restart of a few minutes"
POSTGRES_OUTAGE_S = 120.0


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def accepted_within(rig: Rig, within: float) -> tuple[list[str], list[int]]:
    """Submit until one is accepted; returns the accepted id(s) and every status seen."""
    deadline = time.monotonic() + within
    seen: list[int] = []
    while time.monotonic() < deadline:
        jid = rig.new_id("back")
        response = rig.post(jid, name="back")
        seen.append(response.status_code)
        assert response.status_code != 500, response.text
        if response.status_code == 202:
            return [jid], seen
        time.sleep(0.1)
    pytest.fail(f"no submission accepted within {within:.0f} s of the restart: {seen}")


def test_redis_down_at_submit_time_accepts_and_runs_when_back(
    rig: Rig, spawn_api: SpawnApi
) -> None:
    worker, api_pid = rig.stack.read_pid("worker"), rig.stack.read_pid("api")
    rig.stack.stop_service("redis")
    down_at = time.monotonic()
    assert not rig.stack.redis_answers(rig.settings)

    # Accepted: committed to the ledger, queued there, within REDIS_TIMEOUT (+ slack).
    ids = [rig.new_id(f"nored{i}") for i in range(5)]
    for jid in ids:
        response, took = timed(lambda jid=jid: rig.post(jid, name="nored"))  # type: ignore[misc]
        assert response.status_code == 202, response.text
        assert took < rig.settings.redis_timeout + 1.0, f"the 202 took {took:.2f} s"
        assert rig.ledger.job(jid)["status"] == "queued"  # type: ignore[index]
    assert rig.api.get(f"/api/v1/jobs/{ids[0]}", headers=rig.read_auth).json()["status"] == "queued"

    # Readiness says what is missing; liveness and reads carry on.
    readiness = rig.api.get("/api/v1/ready", headers=rig.read_auth)
    assert readiness.status_code == 503
    assert readiness.json()["components"]["redis"].startswith("unavailable")
    assert readiness.json()["components"]["postgres"] == "ok"
    assert rig.api.get("/health").status_code == 200

    # An API that starts now starts anyway, and accepts too.
    late_api, late = spawn_api()
    late_id = rig.new_id("late")
    assert rig.post(late_id, via=late, name="late").status_code == 202

    time.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))  # a real outage, not a blip
    rig.stack.start_redis(rig.settings)

    rows = rig.ledger.wait_for([*ids, late_id], within=30)
    assert all(r["tries"] == 1 for r in rows), [r["tries"] for r in rows]
    assert runs([*ids, late_id]) == dict.fromkeys([*ids, late_id], 1)
    _, statuses = accepted_within(rig, within=5)
    assert statuses == [202]
    assert rig.stack.read_pid("worker") == worker, "the worker was restarted"
    assert rig.stack.read_pid("api") == api_pid, "the API was restarted"
    assert late_api.alive()


def test_redis_frozen_still_accepts_within_2_s(rig: Rig) -> None:
    """A hung Redis (SIGSTOP: connections open, no answers) must not hang the API."""
    pid = rig.stack.read_pid("redis")
    assert pid
    ids = [rig.new_id(f"frozen{i}") for i in range(3)]
    with frozen(pid):
        answers = [timed(lambda jid=jid: rig.post(jid)) for jid in ids]  # type: ignore[misc]
        readiness, took_ready = timed(lambda: rig.api.get("/api/v1/ready"))
    for response, took in answers:
        assert response.status_code == 202, response.text
        assert took < 2.0, f"the 202 took {took:.2f} s"
    assert readiness.status_code == 503 and took_ready < 3.0
    rig.ledger.wait_for(ids, within=30)
    assert runs(ids) == dict.fromkeys(ids, 1)


def test_redis_down_for_3_minutes_the_worker_survives_and_drains(rig: Rig) -> None:
    worker = rig.stack.read_pid("worker")
    # More jobs than the worker runs at once: some are running, the rest wait in the queue.
    before = [rig.new_id(f"long{i}") for i in range(3 * rig.settings.worker_max_jobs)]
    assert set(rig.post_all(before, name="long", sleep_ms=1000).values()) == {202}
    assert any(not rig.redis.exists(f"arq:in-progress:{j}") for j in before), "none waited"

    rig.stack.stop_service("redis")
    down_at = time.monotonic()
    during = [rig.new_id(f"during{i}") for i in range(20)]
    assert set(rig.post_all(during, name="during").values()) == {202}
    while time.monotonic() - down_at < REDIS_OUTAGE_S:
        assert rig.stack.read_pid("worker") == worker, "the worker exited during the outage"
        time.sleep(5)
    rig.stack.start_redis(rig.settings)

    everything = before + during
    rows = rig.ledger.wait_for(everything, within=120)
    assert rig.ledger.count("hello", everything) == len(everything)
    assert runs(everything) == dict.fromkeys(everything, 1)
    assert all(r["tries"] == 1 for r in rows), sorted({r["tries"] for r in rows})
    assert rig.stack.read_pid("worker") == worker, "the worker was restarted"


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
    rig: Rig, spawn_api: SpawnApi
) -> None:
    """Redis's replies come after REDIS_TIMEOUT: the API cannot tell whether Redis took a job.
    The ledger decides: 202 ⇒ runs exactly once; any error answer ⇒ never runs."""
    ids = [rig.new_id(f"slow{i}") for i in range(30)]
    answers: dict[str, int] = {}
    with DelayedReplies(rig.settings.redis_port, rig.settings.redis_timeout + 0.5) as proxy:
        _, slow = spawn_api(REDIS_PORT=str(proxy.port))
        for jid in ids:
            answers[jid] = rig.post(jid, via=slow, name="slow").status_code
            time.sleep(0.1)  # spread over several of the API's hand-over retries
        accepted = [j for j, code in answers.items() if code == 202]
        assert len(accepted) == len(ids), f"PostgreSQL was up, yet: {answers}"
        rig.ledger.wait_for(accepted, within=60)
    refused = [j for j in ids if j not in accepted]
    counts = runs(ids)
    assert {j: counts[j] for j in accepted} == dict.fromkeys(accepted, 1)
    assert {j: counts[j] for j in refused} == dict.fromkeys(refused, 0)
    assert all(rig.ledger.job(j) is None for j in refused)
    assert rig.ledger.count("hello", accepted) == len(accepted)


@pytest.fixture
def postgres_back(stack: ModuleType, settings: Settings) -> Iterator[None]:
    yield
    if not stack.pg_answers(settings):
        stack.start_postgres(settings)


def test_postgres_down_for_2_minutes_loses_nothing_and_costs_no_try(
    rig: Rig, postgres_back: None
) -> None:
    worker, api_pid = rig.stack.read_pid("worker"), rig.stack.read_pid("api")
    # 200 jobs of half a second: running and queued when PostgreSQL stops.
    ids = [rig.new_id(f"pg{i}") for i in range(200)]
    assert set(rig.post_all(ids, name="pg", sleep_ms=500).values()) == {202}
    rig.stack.stop_service("postgres")
    down_at = time.monotonic()
    assert not rig.stack.pg_answers(rig.settings)

    # A submission: 503 at once, saying why and what to do, and nothing reaches Redis.
    refused = rig.new_id("refused")
    response, took = timed(lambda: rig.post(refused))
    assert response.status_code == 503, response.text
    assert took < rig.settings.db_connect_timeout + 1.0, f"the 503 took {took:.2f} s"
    assert "PostgreSQL" in response.json()["detail"]
    assert "same job id" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert rig.redis.exists(f"arq:job:{refused}") == 0, "a refused submission reached Redis"
    readiness = rig.api.get("/api/v1/ready", headers=rig.read_auth)
    assert readiness.status_code == 503
    assert readiness.json()["components"]["postgres"].startswith("unavailable")
    assert rig.api.get("/health").status_code == 200

    while time.monotonic() - down_at < POSTGRES_OUTAGE_S:
        assert rig.stack.read_pid("worker") == worker, "the worker exited during the outage"
        time.sleep(5)
    rig.stack.start_postgres(rig.settings)

    back, statuses = accepted_within(rig, within=10)
    assert statuses[0] in (202, 503), statuses
    rows = rig.ledger.wait_for(ids + back, within=120)
    assert rig.ledger.count("hello", ids + back) == len(ids + back)
    # Waiting for the ledger never spends a try: every job ends on its first.
    assert all(r["tries"] == 1 for r in rows), sorted({r["tries"] for r in rows})
    assert rig.ledger.job(refused) is None
    log = (rig.stack.LOGS / "worker.log").read_text(errors="replace")
    assert "no claims until it is back" in log and "claiming jobs again" in log
    assert rig.stack.read_pid("worker") == worker, "the worker was restarted"
    assert rig.stack.read_pid("api") == api_pid, "the API was restarted"
