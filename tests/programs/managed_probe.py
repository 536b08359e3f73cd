"""Run a rendered project's own code (settings, pools, clients) against the managed servers of
test_managed_services.py, once per environment, and print what each did as JSON.

Usage: python managed_probe.py APP KIND ENVS_JSON, with the project's `src` on PYTHONPATH;
KIND is `db` or `redis`. Each answer is {"ok": ...} or {"error": ..., "reason": ...}: the
project's own error, and the driver's reason found by connecting once more directly.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from types import SimpleNamespace
from typing import Any

SSL = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def project(app: str) -> SimpleNamespace:
    """The project's modules the probe uses (the app code is known only at run time)."""
    return SimpleNamespace(
        config=importlib.import_module(f"{app}.core.config"),
        db=importlib.import_module(f"{app}.db"),
        pool=importlib.import_module(f"{app}.db.pool"),
        queue=importlib.import_module(f"{app}.queue"),
    )


async def db(p: SimpleNamespace, s: Any) -> dict[str, list[object]]:
    """Each role's pool, as the services open them: is its session on TLS, and which."""
    out = {}
    async with p.db.Database(s) as database:
        for role, pool in database.pools.items():
            async with pool.connection() as conn:
                row = await (await conn.execute(SSL)).fetchone()
                out[str(role)] = [row["ssl"], row["version"]]
    return out


async def db_reason(p: SimpleNamespace, s: Any) -> str | None:
    import psycopg

    try:
        await (await psycopg.AsyncConnection.connect(p.pool.conninfo(s, p.pool.Role.ADMIN))).close()
    except psycopg.Error as exc:
        return str(exc)
    return None


async def queue(p: SimpleNamespace, s: Any) -> dict[str, str]:
    """A key written by the API's client, read by what arq's worker builds from the settings."""
    from arq.connections import create_pool

    api = await p.queue.connect(s)
    try:
        await api.set("probe:key", "written by the API client", ex=60)
        worker = await create_pool(
            p.queue.redis_settings(s),
            job_serializer=p.queue.serialize,
            job_deserializer=p.queue.deserialize,
        )
        try:
            return {"worker_read": (await worker.get("probe:key")).decode()}
        finally:
            await worker.aclose()
    finally:
        await api.aclose()


async def queue_reason(p: SimpleNamespace, s: Any) -> str | None:
    arq = p.queue.client(s)
    try:
        await arq.ping()
    except Exception as exc:  # the reason, whatever it is, is the answer
        return f"{type(exc).__name__}: {exc}"
    finally:
        await arq.aclose()
    return None


async def case(p: SimpleNamespace, kind: str, env: dict[str, str]) -> dict[str, object]:
    os.environ.update(env)
    s = p.config.load_settings()
    try:
        return {"ok": await (db if kind == "db" else queue)(p, s)}
    except Exception as exc:  # reported, with the driver's reason
        reason = await (db_reason if kind == "db" else queue_reason)(p, s)
        return {"error": f"{type(exc).__name__}: {exc}", "reason": reason}


async def cases(app: str, kind: str, envs: list[dict[str, str]]) -> list[dict[str, object]]:
    p, answers, saved = project(app), [], dict(os.environ)
    for env in envs:
        answers.append(await case(p, kind, env))
        os.environ.clear()
        os.environ.update(saved)
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(cases(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))))
