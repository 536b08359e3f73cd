"""Each worker announces itself in Redis every few seconds, for readiness and the status page.

`<app>:workers` is a sorted set of worker ids scored by last beat (ms); `<app>:worker:<id>`
holds the details and expires when the worker stops beating. The worker writes (`run_forever`,
`stop`); the API reads (`live_workers`, `recent_workers`): the format lives here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.exceptions

log = logging.getLogger(__name__)

BEAT_SECONDS = 2.0
STALE_SECONDS = 10.0


def workers_key(app_code: str) -> str:
    return f"{app_code}:workers"


def worker_key(app_code: str, worker_id: str) -> str:
    return f"{app_code}:worker:{worker_id}"


async def beat(ctx: dict[str, Any]) -> None:
    app = ctx["settings"].app_code
    now_ms = int(time.time() * 1000)
    stats = ctx["stats"]
    pipe = ctx["redis"].pipeline(transaction=False)
    pipe.zadd(workers_key(app), {ctx["worker_id"]: now_ms})
    pipe.zremrangebyscore(workers_key(app), 0, now_ms - 3600_000)
    key = worker_key(app, ctx["worker_id"])
    pipe.hset(
        key,
        mapping={
            "worker_id": ctx["worker_id"],
            "started_ms": stats["started_ms"],
            "last_beat_ms": now_ms,
            "jobs_done": stats["done"],
            "jobs_failed": stats["failed"],
        },
    )
    pipe.expire(key, 3600)
    await pipe.execute()


async def run_forever(ctx: dict[str, Any]) -> None:
    while True:
        try:
            await beat(ctx)
        except (OSError, redis.exceptions.RedisError) as exc:
            log.warning("heartbeat: Redis unavailable: %s", exc)
        await asyncio.sleep(BEAT_SECONDS)


async def stop(ctx: dict[str, Any]) -> None:
    task = ctx.pop("heartbeat", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with contextlib.suppress(OSError, redis.exceptions.RedisError):
        await ctx["redis"].zrem(workers_key(ctx["settings"].app_code), ctx["worker_id"])


async def live_workers(redis: Any, app_code: str) -> int:
    """How many workers beat within STALE_SECONDS."""
    since = int((time.time() - STALE_SECONDS) * 1000)
    return int(await redis.zcount(workers_key(app_code), since, "+inf"))


@dataclass(frozen=True)
class Beat:
    """What one worker said in its last beat."""

    worker_id: str
    last_beat: datetime
    started: datetime | None
    jobs_done: str
    jobs_failed: str

    def online(self, now: datetime) -> bool:
        return (now - self.last_beat).total_seconds() <= STALE_SECONDS


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def recent_workers(redis: Any, app_code: str, most: int) -> list[Beat]:
    """Workers that beat in the last hour, newest beat first: ZREVRANGE + HGETALL, no KEYS."""
    members = await redis.zrevrange(workers_key(app_code), 0, most - 1, withscores=True)
    ids = [_text(member) for member, _ in members]
    pipe = redis.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(worker_key(app_code, worker_id))
    details = await pipe.execute() if ids else []
    beats = []
    for worker_id, (_, score), raw in zip(ids, members, details, strict=True):
        info = {_text(k): _text(v) for k, v in (raw or {}).items()}
        started = info.get("started_ms", "")
        beats.append(
            Beat(
                worker_id=worker_id,
                last_beat=datetime.fromtimestamp(float(score) / 1000, UTC),
                started=(
                    datetime.fromtimestamp(int(started) / 1000, UTC) if started.isdigit() else None
                ),
                jobs_done=info.get("jobs_done", ""),
                jobs_failed=info.get("jobs_failed", ""),
            )
        )
    return beats
