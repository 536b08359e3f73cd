"""The worker's ledger writes: group commit, and knowing when PostgreSQL is away.

One `LedgerWriter` per worker commits the writes of concurrent jobs together: one round trip
and one WAL flush per batch instead of two per job. Each job still awaits its own write, so its
row is durable before the job goes on.

While PostgreSQL is unreachable the writer says so (`available`): the worker stops claiming
jobs (worker/claim.py), and `write_patiently` waits for it to come back
instead of failing the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import psycopg
from opentelemetry.trace import SpanKind
from psycopg.types.json import Jsonb

from ..core.tracing import exporting, quiet, tracer
from ..db import DatabaseUnavailable, get_one, query
from ..db.helpers import Conn, connection
from ..db.pool import Pool

log = logging.getLogger(__name__)

DB_ERRORS = (DatabaseUnavailable, psycopg.OperationalError)
# While PostgreSQL is away, how often the writer asks whether it is back.
PROBE_EVERY_S = 0.5

# The statements a group commit sends once for all of its writes of that name, their rows as
# one JSON array (db/queries.py): PostgreSQL parses, plans and runs one statement, and the
# statement-level triggers on job (V4's counters, V9's minutes) fire once, instead of once a
# job. The worker's writes of no-op jobs replayed, 5 a commit: PostgreSQL's CPU a job 0.56-0.65
# -> 0.24-0.32 ms (README, Performance).
MANY: Final[Mapping[str, str]] = {"job.start": "job.start_many", "job.succeed": "job.succeed_many"}

Write = tuple[str, Mapping[str, Any], "asyncio.Future[None]"]
Statement = tuple[str, Mapping[str, Any]]
_TRACER = tracer(__name__)


class LedgerWriter:
    """Group commit for the ledger writes of one worker process.

    `write` queues a named statement and returns once it is committed. The writes of
    concurrent jobs go together: while one batch is in flight the next one fills up, and it
    goes as soon as the first is committed. There is no timer, so an idle worker's write goes
    at once: a linger would add to every job's latency twice (start and end), and 1-3 ms of
    it showed no gain in `make bench`. Jobs claimed together (worker/claim.py) write
    together: 4-5 writes per commit when draining no-op jobs.

    The writes of one name in a batch go as one statement (MANY) when each is of a job of its
    own. A batch is sent in pipeline mode on an autocommit connection (the pool's kind): every
    statement up to the pipeline's one Sync is a single implicit transaction, so the batch
    costs one round trip and one commit, and commits whole or not at all. The connection is
    kept while writes keep coming (and `hold` seconds after), so the pool's check runs once
    per busy spell, not once per batch.

    A batch that fails with PostgreSQL away fails every write in it (DatabaseUnavailable, and
    the jobs retry); any other error is retried write by write, so one bad value fails only
    its own job.
    """

    MAX_BATCH = 500

    def __init__(self, pool: Pool, *, hold: float = 0.5) -> None:
        self.pool = pool
        self.hold = hold
        self.batches = 0
        self.writes = 0
        self._pending: list[Write] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None
        self.available = asyncio.Event()
        self.available.set()
        self._prober: asyncio.Task[None] | None = None
        # Without an exporter a span is a no-op that still costs ~5% of a no-op job's CPU
        # (py-spy, `make bench`): the write's span is made only when spans are exported.
        self.traced = exporting()
        # Called with each write's lag, queued to committed (the worker's metrics).
        self.observe: Callable[[float], None] | None = None

    async def write(self, name: str, params: Mapping[str, Any]) -> None:
        """Run the named statement; returns when it is committed (raises what it raised).

        When spans are exported, a span `ledger <name>` covers the wait, a child of the job's
        run; the batch's own SQL runs in a task of its own, shared by the jobs of a batch, and
        records no span."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        span = (
            _TRACER.start_as_current_span(f"ledger {name}", kind=SpanKind.CLIENT)
            if self.traced
            else contextlib.nullcontext()
        )
        with span:
            queued = loop.time()
            query(name)  # an unknown name fails here, in its own job
            self._pending.append((name, params, done))
            if self._flusher is None:
                self._flusher = asyncio.create_task(self._flush_all(), context=quiet())
            else:
                self._wake.set()
            await done
            if self.observe is not None:
                self.observe(loop.time() - queued)

    async def write_patiently(self, name: str, params: Mapping[str, Any], within: float) -> bool:
        """`write`, retried while PostgreSQL is unreachable, for up to `within` seconds.

        Returns False if PostgreSQL did not come back in time; any other error is raised.
        """
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                await self.write(name, params)
                return True
            except DB_ERRORS as exc:
                self.lost(exc)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await self.wait_available(left):
                return False

    def lost(self, exc: BaseException) -> None:
        """PostgreSQL failed a write: say so until a probe reaches it again."""
        if self.available.is_set():
            log.warning("ledger: PostgreSQL unreachable (%s); no claims until it is back", exc)
            self.available.clear()
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe())

    async def wait_available(self, within: float) -> bool:
        """Whether PostgreSQL is reachable, waiting up to `within` seconds for it."""
        try:
            async with asyncio.timeout(within):
                await self.available.wait()
        except TimeoutError:
            return False
        return True

    async def _probe(self) -> None:
        while not self.available.is_set():
            try:
                await get_one(self.pool, "health.ping")
            except DB_ERRORS:
                await asyncio.sleep(PROBE_EVERY_S)
                continue
            log.warning("ledger: PostgreSQL is back; claiming jobs again")
            self.available.set()

    async def aclose(self) -> None:
        """Send what is queued and give the connection back (the worker's on_shutdown)."""
        self._closing = True
        self._wake.set()
        if self._prober is not None:
            self._prober.cancel()
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        batch: list[Write] = []
        try:
            while self._pending:
                try:
                    async with connection(self.pool) as conn:
                        while await self._next():
                            batch = self._pending[: self.MAX_BATCH]
                            del self._pending[: self.MAX_BATCH]
                            await self._flush(conn, batch)
                            batch = []
                except Exception as exc:
                    if batch:  # the batch failed as a whole
                        failed, batch = batch, []
                    else:  # no connection: every queued write fails the same way
                        failed, self._pending = self._pending, []
                    for _, _, done in failed:
                        if not done.done():
                            done.set_exception(exc)
        except BaseException:  # cancelled: no writer may wait for ever
            for _, _, done in batch + self._pending:
                done.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None

    async def _next(self) -> bool:
        """Wait for writes to send (True), or `hold` seconds without any (False)."""
        if not self._pending:
            if self._closing:
                return False
            self._wake.clear()
            try:
                async with asyncio.timeout(self.hold):
                    await self._wake.wait()
            except TimeoutError:
                return bool(self._pending)
        return True

    async def _flush(self, conn: Conn, batch: list[Write]) -> None:
        self.batches += 1
        self.writes += len(batch)
        try:
            await _commit(conn, [(name, params) for name, params, _ in batch])
        except DatabaseUnavailable:
            raise
        except Exception:
            if len(batch) == 1 or conn.broken or conn.closed:
                raise
            for name, params, done in batch:  # find the bad write; the others commit
                try:
                    await _commit(conn, [(name, params)])
                except Exception as exc:
                    if not done.done():
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(None)
            return
        for _, _, done in batch:
            if not done.done():  # a job cancelled meanwhile no longer waits
                done.set_result(None)


async def _commit(conn: Conn, writes: list[Statement]) -> None:
    """One pipeline, one transaction: the writes of one name go in one statement (MANY) or
    one `executemany`.

    Errors come out as from `execute_one` (db.helpers.connection maps them).
    """
    assert conn.autocommit, "a pipeline is one implicit transaction only in autocommit mode"
    if len(writes) == 1:  # a pipeline costs more CPU than it saves for one statement
        name, params = writes[0]
        async with connection(conn):
            await conn.execute(query(name), params)
        return
    async with connection(conn), conn.pipeline(), conn.cursor() as cur:
        for name, runs in _grouped(writes):
            many = MANY.get(name)
            if many is not None and len(runs) > 1:
                await cur.execute(query(many), {"writes": Jsonb([_json(p) for p in runs])})
            else:
                await cur.executemany(query(name), runs)


def _grouped(writes: list[Statement]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """The writes by statement name, in order of first appearance when every write is of a
    job of its own (writes of different jobs commute); else runs of one name, in order."""
    ids = [params.get("job_id") for _, params in writes]
    distinct = None not in ids and len(set(ids)) == len(ids)
    groups: list[tuple[str, list[Mapping[str, Any]]]] = []
    at: dict[str, int] = {}
    for name, params in writes:
        if distinct and name in at:
            groups[at[name]][1].append(params)
        elif not distinct and groups and groups[-1][0] == name:
            groups[-1][1].append(params)
        else:
            at[name] = len(groups)
            groups.append((name, [params]))
    return groups


def _json(params: Mapping[str, Any]) -> dict[str, Any]:
    """A write's parameters as one element of a MANY statement's JSON array."""
    return {
        key: value.obj
        if isinstance(value, Jsonb)
        else value.isoformat()
        if isinstance(value, datetime)
        else value
        for key, value in params.items()
    }
