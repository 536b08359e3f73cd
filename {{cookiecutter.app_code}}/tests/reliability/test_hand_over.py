"""The API's own hand-over to Redis rides out a Redis restart: with no dispatcher running (the
worker, and so its dispatcher, paused with SIGSTOP as `make bench` pauses it), Redis is killed
(`kill -9`) and restarted, or kept down for seconds while submissions are accepted, and every
accepted job still reaches its priority's queue in Redis, exactly once, by the API alone: a
failed hand-over is retried on a fresh connection, with the jobs committed meanwhile.

The deadline is generous (the machine is shared): what is checked is that the jobs get there
without the dispatcher, not how fast. An operator sees the outage in the API's `/metrics`:
the jobs waiting for the hand-over, the oldest one's age, the failed tries."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role
from {{ cookiecutter.app_code }}.ledger import submit as submit_module
from {{ cookiecutter.app_code }}.ledger.submit import HandOver
from {{ cookiecutter.app_code }}.queue import Submission, all_queues, client, queue_for

from .conftest import Rig, free_port, frozen

pytestmark = pytest.mark.reliability

DEADLINE_S = 10.0  # generous: a prompt retry takes well under a second
PRIORITIES = ("high", "default", "low")


@pytest.fixture
def no_dispatcher(rig: Rig) -> Iterator[None]:
    """The stack's worker (the only one, with the only dispatcher) paused for the test."""
    worker = rig.stack.read_pid("worker")
    assert worker, "the stack's worker is not running"
    with frozen(worker):
        yield


def kill_redis(rig: Rig) -> None:
    pid = rig.stack.read_pid("redis")
    assert pid
    os.kill(pid, signal.SIGKILL)
    while rig.stack.alive(pid):
        time.sleep(0.05)
    assert not rig.stack.redis_answers(rig.settings)


def submit(rig: Rig, tag: str, n: int) -> dict[str, str]:
    """`n` single submissions (POST /api/v1/jobs), priorities in turn; id -> priority."""
    jobs: dict[str, str] = {}
    for i in range(n):
        jid, priority = rig.new_id(f"{tag}{i:02d}"), PRIORITIES[i % len(PRIORITIES)]
        body = {"job_id": jid, "function": "hello", "priority": priority}
        response = rig.api.post("/api/v1/jobs", json=body, headers=rig.auth)
        assert response.status_code == 202, response.text
        jobs[jid] = priority
        time.sleep(0.05)
    return jobs


def where_queued(rig: Rig, ids: list[str]) -> dict[str, list[str]]:
    """The queues each id is in, and `job` when its arq job key is there, in one round trip."""
    queues = all_queues(rig.settings.queue_name)
    pipe = rig.redis.pipeline(transaction=False)
    for jid in ids:
        pipe.exists(f"arq:job:{jid}")
        for queue in queues:
            pipe.zscore(queue, jid)
    answers = pipe.execute()
    width = 1 + len(queues)
    found: dict[str, list[str]] = {}
    for n, jid in enumerate(ids):
        key, *scores = answers[n * width : (n + 1) * width]
        found[jid] = (["job"] if key else []) + [
            q for q, s in zip(queues, scores, strict=True) if s is not None
        ]
    return found


def assert_in_redis_once_each(rig: Rig, jobs: dict[str, str]) -> None:
    """Within DEADLINE_S, each job has its arq job key and is in its own priority's queue,
    and in no other."""
    want = {jid: ["job", queue_for(rig.settings.queue_name, p)] for jid, p in jobs.items()}
    deadline = time.monotonic() + DEADLINE_S
    found = where_queued(rig, list(jobs))
    while found != want and time.monotonic() < deadline:
        time.sleep(0.1)
        found = where_queued(rig, list(jobs))
    wrong = {jid: places for jid, places in found.items() if places != want[jid]}
    assert not wrong, (
        f"{len(wrong)} of {len(jobs)} accepted jobs not in their queue (once) after "
        f"{DEADLINE_S:.0f} s, with no dispatcher running: {dict(list(wrong.items())[:5])}"
    )
    # The ledger holds them all, still queued: none ran, none was lost.
    rows = rig.ledger.rows("SELECT status FROM job WHERE job_id = ANY(%s)", [list(jobs)])
    assert [r["status"] for r in rows] == ["queued"] * len(jobs)


def test_after_redis_is_killed_and_restarted_the_api_hands_over_without_a_dispatcher(
    rig: Rig, no_dispatcher: None
) -> None:
    before = submit(rig, "pre", 3)  # the API's connections to Redis are in use, then idle
    assert_in_redis_once_each(rig, before)
    kill_redis(rig)
    gap = submit(rig, "gap", 1)  # accepted in the moment Redis is away: its hand-over fails
    rig.stack.start_redis(rig.settings)
    after = submit(rig, "restart", 12)
    assert_in_redis_once_each(rig, {**gap, **after})
    # And again: a second restart finds the API's fresh connections dead in turn.
    kill_redis(rig)
    rig.stack.start_redis(rig.settings)
    assert_in_redis_once_each(rig, submit(rig, "again", 6))


def test_jobs_accepted_while_redis_is_down_reach_it_when_back_without_a_dispatcher(
    rig: Rig, no_dispatcher: None
) -> None:
    assert_in_redis_once_each(rig, submit(rig, "warm", 2))
    kill_redis(rig)
    down_at = time.monotonic()
    during = submit(rig, "down", 15)  # accepted: committed to the ledger, Redis away
    while time.monotonic() - down_at < 5.0:  # a real outage: many failed hand-overs
        during |= submit(rig, "down-late", 1)
        time.sleep(0.5)
    rig.stack.start_redis(rig.settings)
    after = submit(rig, "back", 6)
    assert_in_redis_once_each(rig, {**during, **after})


APP = "{{ cookiecutter.app_code }}"


@dataclass(frozen=True)
class Seen:
    """The API's hand-over metrics in one scrape of /metrics."""

    waiting: float
    oldest_age: float
    failed_tries: float
    left: float  # to the dispatcher, every reason


def hand_over_seen(rig: Rig) -> Seen:
    response = rig.api.get("/metrics", headers=rig.read_auth)
    assert response.status_code == 200, response.text[:300]
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    names = [f"{APP}_hand_over_{name}" for name in ("waiting", "oldest_age_seconds")]
    names += [f"{APP}_hand_over_{name}_total" for name in ("failed_tries", "left")]
    missing = [name for name in names if name not in values]
    assert not missing, f"/metrics does not serve {missing}"
    return Seen(*(values[name] for name in names))


def test_the_api_metrics_show_the_jobs_waiting_for_redis_and_the_failed_tries(
    rig: Rig, no_dispatcher: None
) -> None:
    """While Redis is down, the API's /metrics shows every job accepted since the outage as
    waiting for the hand-over, the oldest one's age and the failed tries growing; once Redis
    is back, none waits, the tries stop failing, and each job is in Redis once."""
    assert_in_redis_once_each(rig, submit(rig, "calm", 2))
    calm = hand_over_seen(rig)
    assert (calm.waiting, calm.oldest_age) == (0, 0), calm
    kill_redis(rig)
    try:
        during = submit(rig, "out-first", 1)
        first_answered = time.monotonic()
        seen: list[Seen] = []
        for n in range(4):  # over ~5 s: the back-off (at most 1 s) tries again in each pause
            during |= submit(rig, f"out{n}-", 4)
            asked = time.monotonic()
            seen.append(hand_over_seen(rig))
            assert seen[-1].waiting == len(during), seen
            assert seen[-1].oldest_age >= asked - first_answered, seen
            time.sleep(1.2)
        tries = [calm.failed_tries] + [s.failed_tries for s in seen]
        assert tries == sorted(set(tries)), f"the failed tries do not grow: {tries}"
    finally:
        rig.stack.start_redis(rig.settings)
    assert_in_redis_once_each(rig, during)
    back = hand_over_seen(rig)
    deadline = time.monotonic() + DEADLINE_S
    while back.waiting and time.monotonic() < deadline:  # the jobs are in Redis: at once
        time.sleep(0.1)
        back = hand_over_seen(rig)
    assert (back.waiting, back.oldest_age) == (0, 0), back
    assert back.left == calm.left, "jobs were left to the dispatcher"
    time.sleep(1.5)  # longer than the back-off: a try still failing would show
    assert hand_over_seen(rig).failed_tries == back.failed_tries


KEEP = 50  # the test's KEEP_MAX


def test_while_redis_stays_away_the_hand_over_backs_off_and_keeps_bounded_jobs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A HandOver whose Redis never answers (a port nobody listens on), given 200 jobs over
    about 3 s: its tries back off (a handful, not a busy loop), it keeps KEEP_MAX jobs at the
    most (the oldest are left to the dispatcher), and at shutdown it gives up at once."""
    monkeypatch.setattr(submit_module, "KEEP_MAX", KEEP)
    away = settings.model_copy(update={"redis_port": free_port()})
    tries, waiting, closing = asyncio.run(_redis_away(away))
    # 0.1 s doubling to 1 s: 5-6 tries in 3 s; a busy loop would make thousands.
    assert 2 <= tries <= 30, f"{tries} tries in about 3 s"
    assert waiting <= KEEP, f"{waiting} jobs kept, more than KEEP_MAX ({KEEP})"
    assert closing < 10.0, f"aclose took {closing:.1f} s"


async def _redis_away(settings: Settings) -> tuple[int, int, float]:
    """Tries until the jobs stop, jobs kept after one more try, seconds aclose took."""
    run = uuid.uuid4().hex[:8]
    async with Database(settings, Role.APP) as db:
        hand_over = HandOver(client(settings), settings)
        try:
            for i in range(20):
                jobs = [Submission(f"test-away-{run}-{i}-{n}", "hello", {}) for n in range(10)]
                hand_over.add(db[Role.APP], jobs)
                await asyncio.sleep(0.15)
            tries = hand_over.failed_tries
            for _ in range(200):  # 10 s for one more failed try: the trim follows every one
                if hand_over.failed_tries > tries:
                    break
                await asyncio.sleep(0.05)
            assert hand_over.failed_tries > tries, "the hand-over stopped trying"
            waiting = hand_over.waiting
            # What the API's metrics export: every try counted, every job left counted once.
            assert hand_over.failed_total == hand_over.failed_tries
            assert hand_over.left_total == {"keep_max": 200 - waiting, "error": 0, "shutdown": 0}
            assert hand_over.oldest_age() > 2.5  # the first jobs came ~3 s ago, none went
        finally:
            start = time.monotonic()
            await hand_over.aclose()
            closing = time.monotonic() - start
            await hand_over.arq.aclose()
        assert (hand_over.waiting, hand_over.oldest_age()) == (0, 0)
        assert hand_over.left_total["shutdown"] == waiting
        return tries, waiting, closing
