"""Single submissions that arrive together share one INSERT (ledger/group.py); each still
gets its own answer, after the commit of its row, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from {{ cookiecutter.app_code }}.db import Database, Role, get_many
from {{ cookiecutter.app_code }}.db.pool import InvalidValue
from {{ cookiecutter.app_code }}.ledger.group import GroupInsert, Row, Taken

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def ledger_ids(database: Database, ids: list[str]) -> list[str]:
    rows = await get_many(database[Role.ADMIN], "job.statuses", {"job_ids": ids})
    return sorted(r["job_id"] for r in rows)


async def test_together_each_gets_its_row_and_a_repeated_id_its_refusal(
    database: Database, job_id: Callable[[str], str]
) -> None:
    ids = [job_id(f"group{n}") for n in range(12)]
    inserts = GroupInsert(database[Role.APP])
    first = [Row(i, "noop", {"n": n}, "ab" * 16, "cd" * 8) for n, i in enumerate(ids)]
    again = [Row(i, "noop", {}, None, None) for i in ids[:4]]  # the same ids, at the same time
    answers = await asyncio.gather(
        *(inserts.insert(r) for r in [*first, *again]), return_exceptions=True
    )
    accepted, repeated = answers[:12], answers[12:]
    assert [a["job_id"] for a in accepted] == ids, accepted  # type: ignore[index]
    assert [a["params"] for a in accepted] == [{"n": n} for n in range(12)]  # type: ignore[index]
    assert {a["trace_id"] for a in accepted} == {"ab" * 16}  # type: ignore[index]
    assert all(isinstance(a, Taken) and a.status == "queued" for a in repeated), repeated
    assert await ledger_ids(database, ids) == sorted(ids)


async def test_a_value_postgresql_refuses_fails_only_its_own_submission(
    database: Database, job_id: Callable[[str], str]
) -> None:
    ids = [job_id(f"groupok{n}") for n in range(4)]
    bad = job_id("groupnul")
    inserts = GroupInsert(database[Role.APP])
    rows = [Row(i, "noop", {}, None, None) for i in ids]
    rows.insert(2, Row(bad, "noop", {"text": "a\u0000b"}, None, None))
    answers = await asyncio.gather(*(inserts.insert(r) for r in rows), return_exceptions=True)
    assert isinstance(answers[2], InvalidValue), answers[2]
    assert [a["job_id"] for a in answers if isinstance(a, dict)] == ids
    assert await ledger_ids(database, [*ids, bad]) == sorted(ids)


async def test_a_submission_that_went_away_leaves_the_others_their_answers(
    database: Database, job_id: Callable[[str], str]
) -> None:
    ids = [job_id(f"groupgone{n}") for n in range(3)]
    inserts = GroupInsert(database[Role.APP])
    tasks = [asyncio.create_task(inserts.insert(Row(i, "noop", {}, None, None))) for i in ids]
    await asyncio.sleep(0)  # all three wait for their statement
    tasks[1].cancel()
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(answers[1], asyncio.CancelledError)
    assert [answers[0]["job_id"], answers[2]["job_id"]] == [ids[0], ids[2]]  # type: ignore[index]
    # Its row went with the group all the same, as a request cut off mid-insert may commit.
    assert await ledger_ids(database, ids) == sorted(ids)
