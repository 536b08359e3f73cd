"""Group commit for the worker's Redis transactions: one MULTI/EXEC for the jobs of a claim.

arq makes two transactions of its own per job, each a Redis round trip: when a run starts
(read the job, count the try) and when it ends (`Worker.finish_job`: store the result, drop
the job's keys and its queue entry). Jobs claimed together (worker/claim.py) start together
and, when short, end together, so those transactions come in bursts. py-spy on a worker
draining no-op jobs put about 45% of its CPU in redis-py, a quarter of that in the socket
writes of those round trips.

`install` makes the worker's clients send the MULTI/EXEC transactions that are
waiting at the same moment as one: the first goes at the next turn of the event loop, the
ones that arrive while a group is in flight go together in the next, as the ledger's group
commit does (ledger/writer.py). Each caller still gets its own replies, in order, and its
own error. Redis runs a transaction whole, so commands of different transactions never
interleave; a group is one transaction, so each one inside it stays atomic. Its commands are
arq's own, unchanged: nothing of arq is replaced, and no Lua copy of its logic can drift.

Left alone, and sent as before: a pipeline that WATCHes (arq's `enqueue_job` relies on the
WATCH failing), one that called MULTI itself, one without a transaction, and one with Lua
scripts to load. redis-py does not group transactions itself (its pipelines are per caller),
hence this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline, Redis
from redis.exceptions import ResponseError

from ..core.tracing import quiet

Command = tuple[tuple[Any, ...], Mapping[str, Any]]
Waiting = tuple[list[Command], "asyncio.Future[list[Any]]"]
_GROUP = "_transaction_group"


class TransactionGroup:
    """Sends the transactions of concurrent callers as one MULTI/EXEC (see the module)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.groups = 0  # MULTI/EXECs sent for grouped transactions
        self.transactions = 0  # transactions they carried
        self._pending: list[Waiting] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, commands: list[Command]) -> list[Any]:
        """The replies to `commands`, one transaction's worth, as MULTI/EXEC gives them (an
        error in place of the reply of a command Redis refused)."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((commands, done))
        if self._flusher is None:  # in no job's context: the group is every caller's
            self._flusher = asyncio.create_task(self._flush_all(), context=quiet())
        return await done

    async def _flush_all(self) -> None:
        try:
            group: list[Waiting] = []
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    await self._flush(group)
                except Exception as exc:  # not sent, or no answer: each caller gets it
                    for _, done in group:
                        if not done.done():
                            done.set_exception(exc)
        except BaseException:  # cancelled (the worker stops): no caller may wait for ever
            for _, done in group + self._pending:
                done.cancel()
            self._pending = []
            raise
        finally:
            self._flusher = None

    async def _flush(self, group: list[Waiting]) -> None:
        self.groups += 1
        self.transactions += len(group)
        try:
            replies = await self._exec([c for commands, _ in group for c in commands])
        except ResponseError:
            if len(group) == 1:
                raise
            # Redis refused the whole group (EXECABORT: a command it would not queue): each
            # transaction again on its own, so the refusal is only its sender's.
            for one in group:
                try:
                    await self._flush([one])
                except ResponseError as exc:
                    if not one[1].done():
                        one[1].set_exception(exc)
            return
        at = 0
        for commands, done in group:
            if not done.done():  # a caller cancelled meanwhile no longer waits
                done.set_result(replies[at : at + len(commands)])
            at += len(commands)

    async def _exec(self, commands: Sequence[Command]) -> list[Any]:
        # The client's own transaction pipeline: its connection pool, retries and reply
        # parsing; raise_on_error=False leaves each refused command's error in its place.
        pipe = Pipeline(self.redis.connection_pool, self.redis.response_callbacks, True, None)
        pipe.command_stack = list(commands)
        return await pipe.execute(raise_on_error=False)


class GroupedPipeline(Pipeline):
    """redis-py's pipeline, whose plain transactions go through a TransactionGroup."""

    group: TransactionGroup

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if (
            self.watching
            or self.explicit_transaction
            or not self.is_transaction
            or self.scripts
            or not self.command_stack
        ):
            return await super().execute(raise_on_error)
        try:
            replies = await self.group.run(self.command_stack)
        finally:
            await self.reset()  # type: ignore[no-untyped-call]
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies


def group_of(redis: Redis) -> TransactionGroup:
    """The client's TransactionGroup (one per client, made on first use)."""
    group = redis.__dict__.get(_GROUP)
    if group is None:
        group = redis.__dict__[_GROUP] = TransactionGroup(redis)
    assert isinstance(group, TransactionGroup)
    return group


def _pipeline(self: Redis, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
    """ArqRedis.pipeline, grouped: redis-py's `Redis.pipeline` with GroupedPipeline."""
    pipe = GroupedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
    pipe.group = group_of(self)
    return pipe


def install() -> None:
    """Every ArqRedis client of this process groups its transactions (the worker's own: the
    API's process never calls this)."""
    ArqRedis.pipeline = _pipeline  # type: ignore[method-assign]


def uninstall() -> None:
    """redis-py's own pipelines again (`make bench --stock`)."""
    ArqRedis.pipeline = Redis.pipeline  # type: ignore[method-assign]
