"""Which pending submissions go into the next group insert (ledger/group.py): oldest first,
distinct ids, at most GROUP_MAX; the rest wait for the next statement."""

from __future__ import annotations

import asyncio

from {{ cookiecutter.app_code }}.ledger import group
from {{ cookiecutter.app_code }}.ledger.group import Row, take


def rows(*ids: str) -> list[Row]:
    loop = asyncio.new_event_loop()
    try:
        return [Row(i, "noop", {}, None, None, done=loop.create_future()) for i in ids]
    finally:
        loop.close()


def test_oldest_first_and_a_second_submission_of_an_id_waits() -> None:
    pending = rows("a", "b", "a", "c", "b")
    first = take(pending)
    assert [r.job_id for r in first] == ["a", "b", "c"]
    assert [r.job_id for r in pending] == ["a", "b"]  # the repeats, in order, for the next
    assert first[0] is not pending[0]
    assert [r.job_id for r in take(pending)] == ["a", "b"]
    assert pending == []


def test_a_group_holds_at_most_group_max(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(group, "GROUP_MAX", 3)
    pending = rows("a", "b", "c", "d", "e")
    assert [r.job_id for r in take(pending)] == ["a", "b", "c"]
    assert [r.job_id for r in pending] == ["d", "e"]
