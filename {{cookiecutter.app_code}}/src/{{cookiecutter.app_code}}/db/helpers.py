"""The four verbs of the seed's db helper: get one, get many, execute one, put many.

Each takes a pool (or a connection, to run inside a caller's transaction), a query name from
`queries.QUERIES` and bound parameters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import DictRow

from .pool import DatabaseUnavailable, InvalidValue, Pool
from .queries import query

Conn: TypeAlias = psycopg.AsyncConnection[DictRow]
Params: TypeAlias = Mapping[str, Any] | None


@asynccontextmanager
async def connection(target: Pool | Conn) -> AsyncIterator[Conn]:
    """`target` itself, or a connection from the pool.

    A lost server becomes DatabaseUnavailable (503); a value PostgreSQL cannot take (a NUL
    character in text or JSON, a number out of range) becomes InvalidValue (422).
    """
    try:
        if isinstance(target, psycopg.AsyncConnection):
            yield target
        else:
            async with target.connection() as conn:
                yield conn
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL is unavailable: {exc}".strip()) from exc
    except psycopg.DataError as exc:
        raise InvalidValue(f"PostgreSQL cannot store a value: {exc}".strip()) from exc


async def get_one(target: Pool | Conn, name: str, params: Params = None) -> dict[str, Any] | None:
    """The first row of a named query, or None when it returns nothing."""
    sql = query(name)
    async with connection(target) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()


async def get_many(target: Pool | Conn, name: str, params: Params = None) -> list[dict[str, Any]]:
    """Every row of a named query."""
    sql = query(name)
    async with connection(target) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def execute_one(target: Pool | Conn, name: str, params: Params = None) -> int:
    """Run one named statement; returns the number of rows it touched."""
    sql = query(name)
    async with connection(target) as conn:
        cur = await conn.execute(sql, params)
        return cur.rowcount


async def put_many(target: Pool | Conn, name: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Run one named statement for many parameter sets in one pipelined transaction."""
    sql = query(name)
    async with connection(target) as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(sql, list(rows))
        return cur.rowcount
