"""The dispatcher's shortcut (queue/waiting.py) on the real servers: rows whose job waits in
its queue cost a sweep no per-row Redis command, and the rows around them whose job is not
waiting are still delivered, put back or settled by that same sweep.

Every job here is due in an hour, so the stack's worker claims none of them; the special rows
are younger than the stack's own dispatcher's MIN_AGE_S when this test's sweep runs (with
min_age_s=0), so that sweep is the one that acts on them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from arq.jobs import serialize_job
from redis.asyncio.connection import AbstractConnection

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db import Database, Role, get_one
from {{ cookiecutter.app_code }}.ledger.dispatch import Dispatcher
from {{ cookiecutter.app_code }}.queue import (
    PRIORITIES,
    ArqRedis,
    Submission,
    all_queues,
    deliver_many,
    queue_for,
    serialize,
)

from .conftest import forget
from .test_dispatch import arq_result

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WAITING = 1_500  # rows whose job waits in its queue (high, default, low in turn)
SPECIAL = ("lost", "stale_entry", "done", "orphan")


@pytest.fixture
async def ids(database: Database, arq_redis: ArqRedis, settings: Settings) -> AsyncIterator[Any]:
    run_id = uuid.uuid4().hex[:10]
    waiting = [f"test-waiting-{run_id}-{n:05d}" for n in range(WAITING)]
    special = {name: f"test-waiting-{run_id}-{name}" for name in SPECIAL}
    yield waiting, special
    everything = waiting + list(special.values())
    await forget(database, arq_redis, everything)
    for queue in all_queues(settings.queue_name):
        await arq_redis.zrem(queue, *everything)


class Sent:
    """Every command any Redis client of this process packs (a pipeline packs each of its
    commands), and every write to a socket (a round trip), while `counting`."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.round_trips = 0
        self.counting = False


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sent]:
    seen = Sent()
    pack, send = AbstractConnection.pack_command, AbstractConnection.send_packed_command

    def pack_command(self: AbstractConnection, *args: Any) -> Any:
        if seen.counting:
            seen.commands.append(args)
        return pack(self, *args)

    async def send_packed_command(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        seen.round_trips += seen.counting
        return await send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "pack_command", pack_command)
    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    yield seen


async def add_rows(
    database: Database, job_ids: list[str], priorities: list[str], age_s: float, run_at: datetime
) -> None:
    async with database[Role.ADMIN].connection() as conn:
        await conn.execute(
            "INSERT INTO job (job_id, function, params, status, source, enqueued_at, run_at, "
            "priority) SELECT i, 'hello', '{\"name\": \"waiting\"}', 'queued', 'api', "
            "now() - make_interval(secs => %s), %s, p "
            "FROM unnest(%s::text[], %s::text[]) AS t(i, p)",
            [age_s, run_at, job_ids, priorities],
        )


async def test_a_sweep_reads_nothing_per_row_for_jobs_waiting_in_their_queue(
    database: Database,
    arq_redis: ArqRedis,
    settings: Settings,
    ids: tuple[list[str], dict[str, str]],
    sent: Sent,
) -> None:
    waiting, special = ids
    later = datetime.now(UTC) + timedelta(hours=1)
    priorities = [PRIORITIES[n % len(PRIORITIES)] for n in range(WAITING)]
    await add_rows(database, waiting, priorities, 10, later)
    jobs = [
        Submission(job_id, "hello", {"name": "waiting"}, later, priority)
        for job_id, priority in zip(waiting, priorities, strict=True)
    ]
    assert await deliver_many(arq_redis, settings, jobs) == WAITING
    # Lost: Redis knows nothing of it.
    # A stale entry: queued, but its job key is gone (expired, or evicted): a worker would find
    # no job to run; so it is not "waiting", and is delivered again (its key written).
    low = queue_for(settings.queue_name, "low")
    await arq_redis.zadd(low, {special["stale_entry"]: int(later.timestamp() * 1000)})
    # Done: arq's result, no job key (the worker could not record the end).
    ok = arq_result(settings, special["done"], True, {"message": "hello waiting"}, "hello")
    await arq_redis.set(f"arq:result:{special['done']}", ok, ex=600)
    # An orphan: a job key, no queue entry.
    job = serialize_job("hello", (), {"name": "orphan"}, None, 0, serializer=serialize)
    await arq_redis.set(f"arq:job:{special['orphan']}", job, ex=600)
    await add_rows(database, list(special.values()), ["low"] * len(SPECIAL), 0, later)

    sent.counting = True
    seen = await Dispatcher(settings, database[Role.DATA], arq_redis).sweep(min_age_s=0)
    sent.counting = False

    # Not one command names a waiting job (as itself, or in a key): no per-row read for them.
    names = set(waiting)
    per_row = [c for c in sent.commands if any(_job_id(a) in names for a in c[1:])]
    assert not per_row, f"{len(per_row)} commands name waiting jobs, e.g. {per_row[:3]}"
    # The whole sweep's Redis traffic does not grow with the waiting rows: the old check sent
    # five commands a row (7,500 here), in a round trip a page of 500.
    kinds = Counter(str(c[0]) for c in sent.commands)
    assert len(sent.commands) < 100 and sent.round_trips < 20, (sent.round_trips, kinds)
    assert seen.rows >= WAITING + len(SPECIAL)

    # The rows around them were checked and acted on by this same sweep.
    assert seen.delivered >= 2 and seen.requeued >= 1 and seen.settled >= 1, seen
    for name in ("lost", "stale_entry"):
        assert await arq_redis.exists(f"arq:job:{special[name]}"), name
        assert await arq_redis.zscore(low, special[name]) is not None, name
    assert await arq_redis.zscore(low, special["orphan"]) is not None
    done = await get_one(database[Role.ADMIN], "job.get", {"job_id": special["done"]})
    assert done is not None and done["status"] == "succeeded", done
    assert done["result"] == {"message": "hello waiting"}


def _job_id(arg: Any) -> str:
    """The job id a command's argument names: itself, or the tail of a key (`arq:job:<id>`)."""
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
    return text.rsplit(":", 1)[-1]
