"""Which ids wait in arq's queues with their job: read in bulk, for the dispatcher's sweep.

The dispatcher compares every unfinished ledger row with what arq holds for it, and
`holdings` reads five things a row. Most of the time, and always while a large backlog drains,
nearly every row is simply waiting in its queue; reading five keys for each made a sweep of
20,000 rows cost ~2.8 s of the worker process's CPU (most of it redis-py packing and parsing
100,000 commands). `waiting` instead reads the queues' members a chunk at a time, each chunk
one script call that also checks the member's job key on the Redis side, so the worker gets
back only ids and parses one reply a chunk.

An id is returned only with the same evidence `holdings` calls Held.QUEUED: arq's job key
exists and the id is in a queue. A queue entry whose job key is gone (it expired, or Redis
lost keys but not the sorted set) is left out, so the dispatcher still checks it in full and
delivers it again at once; the shortcut never turns a row that needs action into "waiting".

Chunks are read by rank, one script call each, so the queues can change between calls
(claims remove entries from the head, deliveries add): an entry may then be read twice or not
at all. Read twice costs nothing; not read means its row gets the full check, as before. So
drift costs CPU, never correctness.
"""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from .names import all_queues

# Queue entries one script call reads at the most. Redis runs a script without interleaving
# other clients, and this one costs Redis ~2-3 us an entry (ZRANGE, and EXISTS on its job key):
# 2-3 ms a call of 1,000 on the bench machine, a wait every claim and hand-over may see while
# a backlog waits. Chunks of 5,000 (10-15 ms a call) saved the worker ~10 ms of CPU a snapshot
# of 20,000 ids (20 -> 10 ms, once a sweep, every 2 s at most: under 0.5% of a core), but a
# `high` job submitted during a `low` backlog should start within milliseconds, not wait behind
# the snapshot: the shorter stall wins.
WAITING_CHUNK = 1_000
# Entries read at the most over all queues: a sweep walks at most MAX_ROWS_PER_SWEEP rows
# (ledger/dispatch.py), so a larger backlog is not read whole; the rows of ids not read get
# the full check (correct, only dearer).
WAITING_MAX = 100_000

# KEYS: the high, default and low queues (all_queues). ARGV: the job key prefix, the queue to
# start in (1 to 3), the rank to start at, how many entries to read at the most. Returns the
# queue and rank the next call starts at (queue 4: all read), then per queue the ids read whose
# job key exists, joined by newlines: one string a queue is parsed and split by C code, where
# an array of ids cost the worker a Python object an id. An id with a newline in it (the API
# takes none) would come back split, so not found "waiting": it only gets the full check.
WAITING_LUA = """
local prefix = ARGV[1]
local q = tonumber(ARGV[2])
local rank = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local found = {}
for n = 1, 3 do
  found[n] = {}
end
while q <= 3 and budget > 0 do
  local ids = redis.call('ZRANGE', KEYS[q], rank, rank + budget - 1)
  local f = found[q]
  for i = 1, #ids do
    if redis.call('EXISTS', prefix .. ids[i]) == 1 then
      f[#f + 1] = ids[i]
    end
  end
  budget = budget - #ids
  if budget > 0 then
    q = q + 1
    rank = 0
  else
    rank = rank + #ids
  end
end
return {q, rank, table.concat(found[1], '\\n'), table.concat(found[2], '\\n'),
  table.concat(found[3], '\\n')}
"""


async def waiting(
    arq: ArqRedis, queue_name: str, chunk: int = WAITING_CHUNK, most: int = WAITING_MAX
) -> dict[str, set[str]]:
    """Per queue (all_queues' names), the ids in it whose job key exists: jobs arq holds as
    queued (or claimed: a claimed job waits in arq's own queue while it runs)."""
    queues = all_queues(queue_name)
    script = arq.register_script(WAITING_LUA)
    found: dict[str, set[str]] = {name: set() for name in queues}
    at, rank, read = 1, 0, 0
    while at <= len(queues) and read < most:
        reply: list[Any] = await script(keys=queues, args=[job_key_prefix, at, rank, chunk])
        at, rank = int(reply[0]), int(reply[1])
        for name, ids in zip(queues, reply[2:], strict=True):
            if ids:
                found[name].update(ids.decode().split("\n"))
        read += chunk
    return found
